// Package policies installs the project's admission policies
// (config/policy) into a test API server, as the deployment does: envtest
// installs the CRDs, and these give them the rules that admission, not the
// schema, enforces.
package policies

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Install creates every object of the policy files kustomization.yaml in
// dir (the repository's config/policy) lists.
func Install(ctx context.Context, c client.Client, dir string) error {
	var k struct{ Resources []string }
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err == nil {
		err = yaml.Unmarshal(data, &k)
	}
	if err != nil {
		return fmt.Errorf("reading the policies' kustomization: %w", err)
	}
	for _, file := range k.Resources {
		if err := create(ctx, c, filepath.Join(dir, file)); err != nil {
			return err
		}
	}
	return nil
}

// create creates the objects of a multi-document YAML file, as kubectl
// create -f.
func create(ctx context.Context, c client.Client, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}
