package controllers

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// validSpec is a valid task spec; each case below breaks one thing in it.
const validSpec = `
type: import
input:
  importFrom: https://images.test/cirros.qcow2
  importFromFormat: qcow2
  imageProperties: {diskFormat: raw, containerFormat: bare}
`

// TestInvalidManifestsAreRefused checks that the API server refuses each
// malformed manifest with a message that names the field.
func TestInvalidManifestsAreRefused(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(spec map[string]any)
		error string
	}{
		{"no type", func(s map[string]any) { delete(s, "type") },
			`spec.type: Required value`},
		{"unknown type", func(s map[string]any) { s["type"] = "api_image_import" },
			`spec.type: Unsupported value: "api_image_import": supported values: "import"`},
		{"no input", func(s map[string]any) { delete(s, "input") },
			`spec.input: Required value`},
		{"no importFrom", func(s map[string]any) { delete(input(s), "importFrom") },
			`spec.input.importFrom: Required value`},
		{"file URL", func(s map[string]any) { input(s)["importFrom"] = "file:///etc/passwd" },
			`spec.input.importFrom: Invalid value: "file:///etc/passwd": input.importFrom must be an http or https URL`},
		{"relative URL", func(s map[string]any) { input(s)["importFrom"] = "cirros.qcow2" },
			`spec.input.importFrom: Invalid value: "cirros.qcow2": input.importFrom must be an absolute URL`},
		{"URL without a host", func(s map[string]any) { input(s)["importFrom"] = "http:///cirros.qcow2" },
			`input.importFrom must name a host`},
		{"huge URL", func(s map[string]any) { input(s)["importFrom"] = "https://images.test/" + strings.Repeat("a", 2048) },
			`spec.input.importFrom: Too long: may not be more than 2048 bytes`},
		{"unknown source format", func(s map[string]any) { input(s)["importFromFormat"] = "qcow3" },
			`spec.input.importFromFormat: Unsupported value: "qcow3"`},
		{"unknown disk format", func(s map[string]any) { props(s)["diskFormat"] = "exe" },
			`spec.input.imageProperties.diskFormat: Unsupported value: "exe"`},
		{"no container format", func(s map[string]any) { delete(props(s), "containerFormat") },
			`spec.input.imageProperties.containerFormat: Required value`},
		{"unknown container format", func(s map[string]any) { props(s)["containerFormat"] = "zip" },
			`spec.input.imageProperties.containerFormat: Unsupported value: "zip"`},
		{"negative minDisk", func(s map[string]any) { props(s)["minDisk"] = -1 },
			`spec.input.imageProperties.minDisk: Invalid value: -1: spec.input.imageProperties.minDisk in body should be greater than or equal to 0`},
		{"bad visibility", func(s map[string]any) { props(s)["visibility"] = "everyone" },
			`spec.input.imageProperties.visibility: Unsupported value: "everyone"`},
		{"duplicate tags", func(s map[string]any) { props(s)["tags"] = []any{"a", "a"} },
			`spec.input.imageProperties.tags[1]: Duplicate value: "a"`},
		{"short sha256", func(s map[string]any) {
			s["source"] = map[string]any{"checksums": []any{map[string]any{"algorithm": "sha256", "value": "abcd"}}}
		}, `a sha256 checksum value must be 64 hex digits`},
		{"upper-case checksum", func(s map[string]any) {
			s["source"] = map[string]any{"checksums": []any{map[string]any{"algorithm": "md5", "value": strings.Repeat("A", 32)}}}
		}, `spec.source.checksums[0].value: Invalid value: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA": spec.source.checksums[0].value in body should match '^[0-9a-f]+$'`},
		{"unknown checksum algorithm", func(s map[string]any) {
			s["source"] = map[string]any{"checksums": []any{map[string]any{"algorithm": "crc32", "value": "abcd1234"}}}
		}, `spec.source.checksums[0].algorithm: Unsupported value: "crc32"`},
		{"zero idle timeout", func(s map[string]any) { s["source"] = map[string]any{"idleTimeoutSeconds": 0} },
			`spec.source.idleTimeoutSeconds: Invalid value: 0: spec.source.idleTimeoutSeconds in body should be greater than or equal to 1`},
		{"backoffLimit too high", func(s map[string]any) { s["backoffLimit"] = 1000 },
			`spec.backoffLimit: Invalid value: 1000: spec.backoffLimit in body should be less than or equal to 20`},
		{"no importFromFormat", func(s map[string]any) { delete(input(s), "importFromFormat") },
			`spec: Invalid value: input.importFromFormat is required: the declared format of the source (qcow2, raw, vmdk, ...)`},
		{"no imageProperties", func(s map[string]any) { delete(input(s), "imageProperties") },
			`spec: Invalid value: input.imageProperties is required, with at least diskFormat and containerFormat`},
		{"image name too long for a label", func(s map[string]any) { s["image"] = map[string]any{"name": strings.Repeat("a", 64)} },
			`spec.image.name: Too long: may not be more than 63 bytes`},
		{"unknown onFailure", func(s map[string]any) { s["image"] = map[string]any{"name": "a", "onFailure": "Retry"} },
			`spec.image.onFailure: Unsupported value: "Retry": supported values: "Queued", "Killed"`},
		{"unknown expiry policy", func(s map[string]any) { s["expiryPolicy"] = "Never" },
			`spec.expiryPolicy: Unsupported value: "Never": supported values: "Retain", "Delete"`},
	}
	ns := newNamespace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			spec := map[string]any{}
			g.Expect(yaml.Unmarshal([]byte(validSpec), &spec)).To(Succeed())
			tc.edit(spec)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": tasksv1.GroupVersion.String(), "kind": "ImageImportTask",
				"metadata": map[string]any{"generateName": "invalid-", "namespace": ns},
				"spec":     spec,
			}}
			err := k8sClient.Create(context.Background(), obj)
			g.Expect(err).To(HaveOccurred(), "the API server accepted the manifest")
			g.Expect(err.Error()).To(ContainSubstring(tc.error))
		})
	}
}

func TestValidSpecIsAccepted(t *testing.T) {
	// The baseline of the table above: without an edit, the manifest is fine.
	g := NewWithT(t)
	spec := map[string]any{}
	g.Expect(yaml.Unmarshal([]byte(validSpec), &spec)).To(Succeed())
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": tasksv1.GroupVersion.String(), "kind": "ImageImportTask",
		"metadata": map[string]any{"generateName": "valid-", "namespace": newNamespace(t)},
		"spec":     spec,
	}}
	g.Expect(k8sClient.Create(context.Background(), obj)).To(Succeed())
	defaulted, _, _ := unstructured.NestedMap(obj.Object, "spec")
	g.Expect(defaulted).To(HaveKeyWithValue("backoffLimit", BeNumerically("==", 3)))
	g.Expect(defaulted).To(HaveKeyWithValue("expiryPolicy", "Retain"))
}

func TestSpecUpdateIsRefused(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "frozen"))
	patch := client.RawPatch("application/merge-patch+json",
		[]byte(`{"spec":{"input":{"importFrom":"https://images.test/other.qcow2"}}}`))
	err := k8sClient.Patch(context.Background(), task, patch)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("spec: Invalid value: spec is immutable; create a new ImageImportTask instead"))
}

func input(spec map[string]any) map[string]any { return spec["input"].(map[string]any) }

func props(spec map[string]any) map[string]any {
	return input(spec)["imageProperties"].(map[string]any)
}
