package controllers

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

func TestJobName(t *testing.T) {
	long := strings.Repeat("a", 250)
	cases := []struct {
		name, uid string
		want      string
	}{
		{"cirros", "uid-1", "cirros-"},
		{long, "uid-1", strings.Repeat("a", 54) + "-"},
		{strings.Repeat("a", 53) + "-.b", "uid-1", strings.Repeat("a", 53) + "-"}, // no "-." before the suffix
	}
	for _, tc := range cases {
		task := sampleTask("ns", tc.name)
		task.UID = types.UID(tc.uid)
		name := jobName(task)
		if !strings.HasPrefix(name, tc.want) || len(name) > 63 {
			t.Errorf("jobName(%q) = %q, want prefix %q and at most 63 characters", tc.name, name, tc.want)
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("jobName(%q) = %q is not a valid name: %v", tc.name, name, errs)
		}
		if errs := validation.IsValidLabelValue(name); len(errs) > 0 {
			t.Errorf("jobName(%q) = %q is not a valid label value: %v", tc.name, name, errs)
		}
	}
	a, b := sampleTask("ns", "same"), sampleTask("ns", "same")
	a.UID, b.UID = "uid-a", "uid-b"
	if jobName(a) == jobName(b) {
		t.Error("a task recreated under the same name must not get its predecessor's Job name")
	}
	if jobName(a) != jobName(a.DeepCopy()) || imageID(a) != imageID(a.DeepCopy()) {
		t.Error("jobName and imageID must be deterministic")
	}
}

func TestDesiredJob(t *testing.T) {
	cfg := testImporterConfig()
	cases := []struct {
		name  string
		edit  func(*tasksv1.ImageImportTask)
		check func(g Gomega, args []string, pod corev1.PodSpec)
	}{{
		name: "the manager's limits, before the site's arguments",
		check: func(g Gomega, args []string, pod corev1.PodSpec) {
			g.Expect(args).To(ContainElements("--max-image-size=68719476736", "--max-virtual-size=1099511627776", "--min-transfer-rate=1024", "--sandbox=required"))
			g.Expect(args[len(args)-1]).To(Equal("--allowed-hosts=images.test"))
		},
	}, {
		name: "defaults",
		check: func(g Gomega, args []string, pod corev1.PodSpec) {
			g.Expect(args).To(ContainElements("--connect-timeout=30s", "--idle-timeout=60s", "--dest="+storeMountPath, "--container-format=bare"))
			g.Expect(pod.Volumes).To(HaveLen(2), "store and scratch only")
			g.Expect(strings.Join(args, " ")).NotTo(ContainSubstring("--credentials-dir"))
		},
	}, {
		name: "secrets are mounted files",
		edit: func(task *tasksv1.ImageImportTask) {
			task.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "creds"}
			task.Spec.Source.CABundleSecretRef = &corev1.LocalObjectReference{Name: "ca"}
		},
		check: func(g Gomega, args []string, pod corev1.PodSpec) {
			g.Expect(args).To(ContainElements("--credentials-dir="+credentialsMountPath, "--ca-bundle="+caBundleMountPath+"/ca.crt"))
			g.Expect(pod.Volumes).To(ContainElement(HaveField("VolumeSource.Secret.SecretName", "creds")))
			g.Expect(pod.Volumes).To(ContainElement(HaveField("VolumeSource.Secret.SecretName", "ca")))
			g.Expect(pod.Containers[0].Env).To(BeEmpty(), "no secret travels in the environment")
		},
	}, {
		name: "an OVA is unpacked by the importer",
		edit: func(task *tasksv1.ImageImportTask) { task.Spec.Input.ImageProperties.ContainerFormat = "ova" },
		check: func(g Gomega, args []string, _ corev1.PodSpec) {
			g.Expect(args).To(ContainElement("--container-format=ova"))
		},
	}, {
		name: "checksums and timeouts",
		edit: func(task *tasksv1.ImageImportTask) {
			task.Spec.Source.Checksums = []tasksv1.Checksum{{Algorithm: "md5", Value: strings.Repeat("0", 32)}}
			task.Spec.Source.IdleTimeoutSeconds = new(int32(5))
		},
		check: func(g Gomega, args []string, _ corev1.PodSpec) {
			g.Expect(args).To(ContainElements("--expected-md5="+strings.Repeat("0", 32), "--idle-timeout=5s"))
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := sampleTask("ns", "t")
			task.UID = "uid"
			if tc.edit != nil {
				tc.edit(task)
			}
			job := desiredJob(task, cfg)
			pod := job.Spec.Template.Spec
			g.Expect(pod.RestartPolicy).To(Equal(corev1.RestartPolicyNever))
			g.Expect(pod.Containers[0].SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
			g.Expect(job.Labels).To(HaveKeyWithValue(tasksv1.LabelTaskUID, "uid"))
			tc.check(g, pod.Containers[0].Args, pod)
		})
	}
}
