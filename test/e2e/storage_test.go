//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// hack/local-cluster/lib.sh and storage.sh
const (
	defaultStorageClass = "node-local"
	localProvisioner    = "imageimport.local/node-volume"
	volcheckImage       = "localhost/imageimport/volcheck:dev"
	volcheckBytes       = 8 << 20
)

// TestDynamicProvisioning checks the local cluster's provisioner (hack/local-cluster/storage.sh):
// a claim that names no class gets the default one; nothing is provisioned before a pod uses the
// claim; then a local volume appears on the node, a pod writes to it and another pod reads the
// same bytes back, and they are on the node's disk; deleting the claim deletes the volume and
// its storage. For volumeMode Filesystem (a file) and Block (the raw device).
func TestDynamicProvisioning(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	sc := &storagev1.StorageClass{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: defaultStorageClass}, sc)).To(Succeed())
	g.Expect(sc.Annotations).To(HaveKeyWithValue("storageclass.kubernetes.io/is-default-class", "true"))
	g.Expect(sc.Provisioner).To(Equal(localProvisioner))
	g.Expect(*sc.VolumeBindingMode).To(Equal(storagev1.VolumeBindingWaitForFirstConsumer))
	g.Expect(*sc.ReclaimPolicy).To(Equal(corev1.PersistentVolumeReclaimDelete))

	// A namespace of its own, made now: the class serves any namespace, with nothing set up in it.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-storage-"}}
	g.Expect(k8s.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { k8s.Delete(context.Background(), ns) })

	t.Run("Filesystem", func(t *testing.T) {
		provisionAndCheck(t, ns.Name, corev1.PersistentVolumeFilesystem)
	})
	t.Run("Block", func(t *testing.T) {
		if _, err := os.Stat("/dev/loop-control"); err != nil {
			t.Skip("SKIP: Block volumes need loop devices and this kernel has none (/dev/loop-control is missing; modprobe loop)")
		}
		provisionAndCheck(t, ns.Name, corev1.PersistentVolumeBlock)
	})
}

func provisionAndCheck(t *testing.T, ns string, mode corev1.PersistentVolumeMode) {
	g := NewWithT(t)
	ctx := context.Background()
	name := "vol-" + strings.ToLower(string(mode))
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  &mode,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	g.Expect(k8s.Create(ctx, pvc)).To(Succeed())
	t.Cleanup(func() { k8s.Delete(context.Background(), pvc) })
	g.Expect(pvc.Spec.StorageClassName).To(HaveValue(Equal(defaultStorageClass)), "the default class is not applied")

	// WaitForFirstConsumer: no volume while no pod uses the claim.
	time.Sleep(3 * time.Second)
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)).To(Succeed())
	g.Expect(pvc.Status.Phase).To(Equal(corev1.ClaimPending))
	g.Expect(pvc.Spec.VolumeName).To(BeEmpty())

	want := volcheckPatternSum(volcheckBytes)
	start := time.Now()
	writer := startVolcheck(t, ns, name+"-write", name, mode, "write")
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)).To(Succeed())
		g.Expect(pvc.Status.Phase).To(Equal(corev1.ClaimBound))
	}, time.Minute, 100*time.Millisecond).Should(Succeed(), func() string { return kubectlDescribe(ns, "pvc/"+name) })
	bound := time.Since(start)
	out := finishVolcheck(t, writer)
	g.Expect(out).To(ContainSubstring("sha256=" + want))
	t.Logf("%s: pod created -> claim Bound %s, -> pod wrote %d MiB and Succeeded %s", mode,
		bound.Round(100*time.Millisecond), volcheckBytes>>20, time.Since(start).Round(100*time.Millisecond))

	pv := &corev1.PersistentVolume{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv)).To(Succeed())
	checkVolume(t, pv, mode)
	onNode := onNodeData(t, pv, mode)
	g.Expect(onNode).To(Equal(want), "the node's storage does not hold what the pod wrote")

	out = finishVolcheck(t, startVolcheck(t, ns, name+"-read", name, mode, "read"))
	g.Expect(out).To(ContainSubstring("sha256="+want), "another pod does not read back what the first wrote")

	start = time.Now()
	g.Expect(k8s.Delete(ctx, pvc)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pv), &corev1.PersistentVolume{}))
	}, time.Minute, 200*time.Millisecond).Should(BeTrue(), "the volume outlives its claim")
	t.Logf("%s: claim deleted -> volume deleted: %s", mode, time.Since(start).Round(100*time.Millisecond))
	checkFreed(t, pv, mode)
}

// startVolcheck creates a pod that writes or reads the claim with volcheck.
func startVolcheck(t *testing.T, ns, pod, claim string, mode corev1.PersistentVolumeMode, op string) *corev1.Pod {
	path := "/data/disk.img"
	c := corev1.Container{Name: "volcheck", Image: volcheckImage, ImagePullPolicy: corev1.PullNever}
	if mode == corev1.PersistentVolumeBlock {
		// The device node is root's (0660): the kubelet gives no group to a pod's block device.
		path = "/dev/xvda"
		c.VolumeDevices = []corev1.VolumeDevice{{Name: "v", DevicePath: path}}
		c.SecurityContext = &corev1.SecurityContext{RunAsUser: new(int64)}
	} else {
		// As the importer runs: not root.
		c.VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/data"}}
	}
	c.Args = []string{op, path, strconv.Itoa(volcheckBytes)}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{c},
			Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	NewWithT(t).Expect(k8s.Create(context.Background(), p)).To(Succeed())
	return p
}

// finishVolcheck waits for a volcheck pod to end, deletes it and returns its output.
func finishVolcheck(t *testing.T, p *corev1.Pod) string {
	g := NewWithT(t)
	ctx := context.Background()
	ns, pod, claim := p.Namespace, p.Name, p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		g.Expect(p.Status.Phase).To(BeElementOf(corev1.PodSucceeded, corev1.PodFailed))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed(), func() string { return kubectlDescribe(ns, "pod/"+pod, "pvc/"+claim) })
	log, err := exec.Command(kubectl, "-n", ns, "logs", pod).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(log))
	g.Expect(p.Status.Phase).To(Equal(corev1.PodSucceeded), string(log))
	// The claim stays in use until the pod is gone: delete it now.
	g.Expect(k8s.Delete(ctx, p)).To(Succeed())
	g.Eventually(func() bool { return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(p), p)) }, time.Minute).Should(BeTrue())
	return string(log)
}

// checkVolume checks what the provisioner made: a local volume of the claim's mode, bound,
// reclaimed by deletion, on this node, at its place on the node's disk.
func checkVolume(t *testing.T, pv *corev1.PersistentVolume, mode corev1.PersistentVolumeMode) {
	g := NewWithT(t)
	g.Expect(pv.Status.Phase).To(Equal(corev1.VolumeBound))
	g.Expect(pv.Annotations).To(HaveKeyWithValue("pv.kubernetes.io/provisioned-by", localProvisioner))
	g.Expect(pv.Spec.StorageClassName).To(Equal(defaultStorageClass))
	g.Expect(pv.Spec.PersistentVolumeReclaimPolicy).To(Equal(corev1.PersistentVolumeReclaimDelete))
	g.Expect(*pv.Spec.VolumeMode).To(Equal(mode))
	g.Expect(pv.Spec.Capacity.Storage().String()).To(Equal("64Mi"))
	g.Expect(pv.Spec.Local).NotTo(BeNil())
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	g.Expect(terms).To(HaveLen(1))
	g.Expect(terms[0].MatchExpressions).To(ConsistOf(corev1.NodeSelectorRequirement{
		Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{nodeHostname(t)}}))
	fi, err := os.Stat(pv.Spec.Local.Path)
	g.Expect(err).NotTo(HaveOccurred())
	if mode == corev1.PersistentVolumeBlock {
		g.Expect(pv.Spec.Local.Path).To(Equal(filepath.Join(localVolumesDir, pv.Name+".dev")))
		g.Expect(fi.Mode()&os.ModeDevice).NotTo(BeZero(), "%s is no block device", pv.Spec.Local.Path)
		g.Expect(loopDevicesOf(t, filepath.Join(localVolumesDir, pv.Name+".img"))).To(HaveLen(1))
	} else {
		g.Expect(pv.Spec.Local.Path).To(Equal(filepath.Join(localVolumesDir, pv.Name)))
		g.Expect(fi.IsDir()).To(BeTrue())
	}
}

// onNodeData hashes the first volcheckBytes of what backs the volume on the node.
func onNodeData(t *testing.T, pv *corev1.PersistentVolume, mode corev1.PersistentVolumeMode) string {
	path := filepath.Join(pv.Spec.Local.Path, "disk.img")
	if mode == corev1.PersistentVolumeBlock {
		path = filepath.Join(localVolumesDir, pv.Name+".img")
		fi, err := os.Stat(path)
		NewWithT(t).Expect(err).NotTo(HaveOccurred())
		NewWithT(t).Expect(fi.Size()).To(Equal(int64(64 << 20)))
	}
	f, err := os.Open(path)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	h := sha256.New()
	_, err = io.CopyN(h, f, volcheckBytes)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return hex.EncodeToString(h.Sum(nil))
}

// checkFreed checks that nothing of a deleted volume is left on the node.
func checkFreed(t *testing.T, pv *corev1.PersistentVolume, mode corev1.PersistentVolumeMode) {
	g := NewWithT(t)
	g.Expect(pv.Spec.Local.Path).NotTo(BeAnExistingFile())
	if mode == corev1.PersistentVolumeBlock {
		g.Expect(filepath.Join(localVolumesDir, pv.Name+".img")).NotTo(BeAnExistingFile())
		out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
		g.Expect(string(out)).NotTo(ContainSubstring(pv.Name), "a loop device still holds the deleted volume's file")
	}
}

func loopDevicesOf(t *testing.T, file string) []string {
	out, err := exec.Command("losetup", "-n", "-O", "NAME", "-j", file).CombinedOutput()
	NewWithT(t).Expect(err).NotTo(HaveOccurred(), string(out))
	return strings.Fields(string(out))
}

func nodeHostname(t *testing.T) string {
	nodes := &corev1.NodeList{}
	NewWithT(t).Expect(k8s.List(context.Background(), nodes)).To(Succeed())
	NewWithT(t).Expect(nodes.Items).To(HaveLen(1))
	return nodes.Items[0].Labels["kubernetes.io/hostname"]
}

func kubectlDescribe(ns string, objects ...string) string {
	out, _ := exec.Command(kubectl, append([]string{"-n", ns, "describe"}, objects...)...).CombinedOutput()
	return string(out)
}

// volcheckPatternSum is the SHA-256 of the first n bytes volcheck writes (hack/local-cluster/provisioner/
// volcheck): SHA-256 blocks of a decimal counter.
func volcheckPatternSum(n int) string {
	h := sha256.New()
	for i := 0; n > 0; i++ {
		b := sha256.Sum256([]byte(strconv.Itoa(i)))
		k := min(n, len(b))
		h.Write(b[:k])
		n -= k
	}
	return hex.EncodeToString(h.Sum(nil))
}

var localVolumesDir = func() string { d, _ := filepath.Abs("../../bin/local-cluster/state/volumes"); return d }()
