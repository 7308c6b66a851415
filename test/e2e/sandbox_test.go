//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// The sandbox around qemu-img, on the node: importer pods run under
// restricted Pod Security and the RuntimeDefault seccomp profile, and
// Landlock must still confine qemu-img there.

const (
	importerImage = "localhost/imageimport/importer:dev"
	// tokenPath is a file every importer pod can read, and qemu-img must not.
	tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// runPod runs command in a pod shaped like an importer pod (restricted, non-
// root, RuntimeDefault seccomp) in the restricted namespace, and returns
// whether it succeeded and its log.
func runPod(t *testing.T, name string, command ...string) (bool, string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "sandbox", Image: importerImage, ImagePullPolicy: corev1.PullNever, Command: command,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	ctx := context.Background()
	k8s.Delete(ctx, pod, client.GracePeriodSeconds(0))
	g := NewWithT(t)
	g.Eventually(func() error { return k8s.Create(ctx, pod) }, 30*time.Second).Should(Succeed(), "the restricted namespace admits the pod")
	t.Cleanup(func() { k8s.Delete(ctx, pod, client.GracePeriodSeconds(0)) })
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.Phase).To(BeElementOf(corev1.PodSucceeded, corev1.PodFailed))
	}, 2*time.Minute, 500*time.Millisecond).Should(Succeed())
	log, err := exec.Command(kubectl, "-n", namespace, "logs", name).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "%s", log)
	return pod.Status.Phase == corev1.PodSucceeded, string(log)
}

// TestLandlockConfinesQemuImgInAPod: in a restricted pod, qemu-img reads the
// pod's service-account token when run directly, and is denied it when run
// through the importer's launcher.
func TestLandlockConfinesQemuImgInAPod(t *testing.T) {
	g := NewWithT(t)
	info := []string{"/usr/bin/qemu-img", "info", "-f", "raw", tokenPath}
	ok, log := runPod(t, "qemu-img-unconfined", info...)
	g.Expect(ok).To(BeTrue(), "qemu-img can read the token when not confined: %s", log)
	g.Expect(log).To(ContainSubstring("virtual size"))

	ok, log = runPod(t, "qemu-img-confined", append([]string{"/usr/local/bin/importer", "__sandbox-exec", "-landlock=true", "--"}, info...)...)
	g.Expect(ok).To(BeFalse(), "qemu-img read the token inside the sandbox: %s", log)
	g.Expect(log).To(ContainSubstring("Permission denied"))
	g.Expect(log).NotTo(ContainSubstring("sandbox:"), "the launcher itself must not fail (Landlock and seccomp are allowed by RuntimeDefault)")
}

// TestSandboxedImportInAPod: an import that converts runs qemu-img under
// Landlock in its pod and succeeds; the importer's log says so.
func TestSandboxedImportInAPod(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	qcow2, raw := testimages.CloudLikeQcow2(t, dir, 64<<20, 16<<20)
	data, err := os.ReadFile(qcow2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(filepath.Join(srcDir, "sandboxed.qcow2"), data, 0o644)).To(Succeed())

	task := newTask("sandboxed", srcURL+"/sandboxed.qcow2", "qcow2", "raw")
	create(t, task)
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
	wantMD5, _ := sums(t, raw)
	g.Expect(got.Status.Image.Checksum).To(Equal(wantMD5))
	pods := podsOf(t, got)
	g.Expect(pods).NotTo(BeEmpty())
	log, err := exec.Command(kubectl, "-n", namespace, "logs", pods[0].Name).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "%s", log)
	g.Expect(string(log)).To(MatchRegexp(`"sandbox":\{"landlock_abi":[1-9]`), "qemu-img ran under Landlock")
}

// TestHostileVMDKFailsInAPod: VMDKs that name the pod's token as an extent
// fail with a reason, and nothing is stored.
func TestHostileVMDKFailsInAPod(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"hostile-vmdk":     testimages.HostileVMDK(t, dir, tokenPath),
		"flat-extent-vmdk": testimages.FlatExtentVMDK(t, dir, tokenPath),
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			data, err := os.ReadFile(path)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(os.WriteFile(filepath.Join(srcDir, name+".vmdk"), data, 0o644)).To(Succeed())
			task := newTask(name, srcURL+"/"+name+".vmdk", "vmdk", "raw")
			create(t, task)
			got := waitFor(t, task, tasksv1.TaskFailure, 3*time.Minute)
			g.Expect(got.Status.Message).To(ContainSubstring("vmdk"))
			g.Expect(got.Status.Attempts).To(Equal(int32(1)), "an unsafe image is a permanent failure")
			g.Expect(got.Status.Result).To(BeNil(), "a failed task names no image")
			store := storeDir(t)
			entries, _ := os.ReadDir(store)
			for _, e := range entries {
				if b, _ := os.ReadFile(filepath.Join(store, e.Name())); len(b) > 0 && string(b[:min(len(b), 4)]) == "eyJh" {
					t.Errorf("%s in the store holds a service-account token", e.Name())
				}
			}
			t.Logf("%s: %s", name, got.Status.Message)
		})
	}
}
