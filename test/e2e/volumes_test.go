//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// Imports into volumes of their own (spec.destination: Volume), on the local cluster's default
// StorageClass (hack/local-cluster/storage.sh): every check reads the bytes the volume holds,
// on the node and from a pod that uses the claim as a KubeVirt VirtualMachine does.

// storeClaim is the store claim of a namespace (the manager's --store-claim).
const storeClaim = "image-store"

// claimPath is where a bound claim's data is on the node: the path its PersistentVolume names
// (a local volume of the default class: a directory, or for Block a device node; or the
// hostPath volume that make run made for images/image-store before the operator created it).
// It waits for the claim to be bound: a store claim is created at its first import.
func claimPath(t testing.TB, ns, claim string) string {
	t.Helper()
	var path string
	NewWithT(t).Eventually(func(g Gomega) {
		pvc := &corev1.PersistentVolumeClaim{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: claim}, pvc)).To(Succeed())
		g.Expect(pvc.Status.Phase).To(Equal(corev1.ClaimBound), "claim %s/%s", ns, claim)
		pv := &corev1.PersistentVolume{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: pvc.Spec.VolumeName}, pv)).To(Succeed())
		switch src := pv.Spec.PersistentVolumeSource; {
		case src.Local != nil:
			path = src.Local.Path
		case src.HostPath != nil:
			path = src.HostPath.Path
		default:
			g.Expect(src).To(BeNil(), "volume %s of claim %s/%s is neither local nor hostPath: the test cannot read it on the node", pv.Name, ns, claim)
		}
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	return path
}

// storeDir is the directory of the image store of the namespace images on the node.
func storeDir(t testing.TB) string { return claimPath(t, namespace, storeClaim) }

// storePath is where the image id is stored on the node.
func storePath(t testing.TB, id string) string { return filepath.Join(storeDir(t), id) }

// volumeTask is a task that imports a qcow2 as raw into a new volume of the mode and size.
func volumeTask(name, ns, url string, mode corev1.PersistentVolumeMode, size string) *tasksv1.ImageImportTask {
	task := newTask(name, url, "qcow2", "raw")
	task.Namespace = ns
	task.Spec.Destination = &tasksv1.Destination{Type: tasksv1.DestinationVolume, Volume: &tasksv1.VolumeDestination{
		VolumeMode: ptr.To(mode), Size: ptr.To(resource.MustParse(size)),
	}}
	return task
}

// volumeSource serves a cloud-like qcow2 (compressed clusters, data and holes) as name and
// returns the SHA-256 of qemu-img's own raw conversion of it, and its virtual size.
func volumeSource(t *testing.T, name string, virtual, data int64) (url, sum string) {
	dir := t.TempDir()
	qcow2, _ := testimages.CloudLikeQcow2(t, dir, virtual, data)
	b, err := os.ReadFile(qcow2)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	NewWithT(t).Expect(os.WriteFile(filepath.Join(srcDir, name), b, 0o644)).To(Succeed())
	want := filepath.Join(dir, "want.raw")
	testimages.QemuImg(t, "convert", "-f", "qcow2", "-O", "raw", qcow2, want)
	return srcURL + "/" + name, fileSum(t, want, virtual)
}

// fileSum is the SHA-256 of the first n bytes of path (a file or a device), which must hold
// that many.
func fileSum(t testing.TB, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	h := sha256.New()
	m, err := io.Copy(h, io.LimitReader(f, n))
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	NewWithT(t).Expect(m).To(Equal(n), "%s holds %d bytes, not %d", path, m, n)
	return hex.EncodeToString(h.Sum(nil))
}

// claimTimes records, for the image volumes of a namespace, by task, when each claim was first seen
// and first seen Bound, from the test's start: the provisioning latency as a user sees it.
type claimTimes struct {
	mu           sync.Mutex
	prefix       string // of the names of the tasks whose claims count
	start        time.Time
	seen, bound  map[string]time.Duration
	stop, exited chan struct{}
}

func watchClaims(t *testing.T, ns, taskPrefix string) *claimTimes {
	c := &claimTimes{prefix: taskPrefix, start: time.Now(), seen: map[string]time.Duration{}, bound: map[string]time.Duration{},
		stop: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(c.exited)
		for {
			var claims corev1.PersistentVolumeClaimList
			if err := k8s.List(context.Background(), &claims, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "image-volume"}); err == nil {
				c.record(claims.Items)
			}
			select {
			case <-c.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *claimTimes) record(claims []corev1.PersistentVolumeClaim) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Since(c.start)
	for _, p := range claims {
		task := p.Labels[tasksv1.LabelTaskName]
		if !strings.HasPrefix(task, c.prefix) {
			continue // another test's
		}
		if _, ok := c.seen[task]; !ok {
			c.seen[task] = now
		}
		if _, ok := c.bound[task]; !ok && p.Status.Phase == corev1.ClaimBound {
			c.bound[task] = now
		}
	}
}

func (c *claimTimes) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.exited
}

// latencies are, per claim, created -> Bound.
func (c *claimTimes) latencies() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d []time.Duration
	for name, b := range c.bound {
		d = append(d, b-c.seen[name])
	}
	slices.Sort(d)
	return d
}

// importIntoVolume runs a task into a new volume of mode, checks the claim the operator made
// and the bytes it holds on the node, and returns the task's status and the claim's volume.
func importIntoVolume(t *testing.T, ns, name string, mode corev1.PersistentVolumeMode) (*tasksv1.ImageImportTask, *corev1.PersistentVolume, string) {
	g := NewWithT(t)
	const virtual = 48 << 20
	url, want := volumeSource(t, name+".qcow2", virtual, 12<<20)
	times := watchClaims(t, ns, name)
	task := volumeTask(name, ns, url, mode, "64Mi")
	create(t, task)
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
	times.close()
	id := got.Status.Result.ImageID
	t.Logf("%s volume: task created -> success %s; claim created -> Bound %v", mode,
		time.Since(times.start).Round(100*time.Millisecond), times.latencies())

	g.Expect(got.Status.Image.VirtualSize).To(Equal(int64(virtual)))
	g.Expect(got.Status.Image.Size).To(Equal(int64(virtual)), "the written size of a raw image is its virtual size")
	g.Expect(got.Status.Image.DiskFormat).To(Equal("raw"))
	pvc := &corev1.PersistentVolumeClaim{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: id}, pvc)).To(Succeed())
	owner := metav1.GetControllerOf(pvc)
	g.Expect(owner).NotTo(BeNil(), "the volume has no owner")
	g.Expect(owner.Kind).To(Equal("Image"))
	g.Expect(owner.Name).To(Equal(id))
	g.Expect(pvc.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, id))
	g.Expect(pvc.Annotations).To(HaveKeyWithValue(tasksv1.AnnotationChecksum, got.Status.Image.Checksum))
	g.Expect(pvc.Spec.StorageClassName).To(HaveValue(Equal(defaultStorageClass)))
	g.Expect(*pvc.Spec.VolumeMode).To(Equal(mode))

	pv := &corev1.PersistentVolume{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: pvc.Spec.VolumeName}, pv)).To(Succeed())
	g.Expect(pv.Spec.Local).NotTo(BeNil())
	if mode == corev1.PersistentVolumeBlock {
		g.Expect(got.Status.Image.Location).To(Equal("pvc://" + ns + "/" + id))
		// The device as the node has it (NAME.dev, the loop device's node): its first
		// virtual-size bytes are the image.
		g.Expect(fileSum(t, pv.Spec.Local.Path, virtual)).To(Equal(want), "the device does not hold qemu-img's conversion of the source")
	} else {
		g.Expect(got.Status.Image.Location).To(Equal("pvc://" + ns + "/" + id + "/disk.img"))
		disk := filepath.Join(pv.Spec.Local.Path, tasksv1.VolumeDiskFile)
		fi, err := os.Stat(disk)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(fi.Size()).To(Equal(int64(virtual)), "disk.img is the virtual size")
		g.Expect(fileSum(t, disk, virtual)).To(Equal(want), "disk.img is not qemu-img's conversion of the source")
		entries, err := os.ReadDir(pv.Spec.Local.Path)
		g.Expect(err).NotTo(HaveOccurred())
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		g.Expect(names).To(ConsistOf(tasksv1.VolumeDiskFile), "the volume holds disk.img alone, no staging file")
	}
	return got, pv, want
}

// readLikeKubeVirt reads the image from the claim the way KubeVirt's virt-launcher pod uses a
// VirtualMachine's persistentVolumeClaim volume: as qemu (107, with fsGroup 107), disk.img
// under /var/run/kubevirt-private/vmi-disks/<volume>/ for Filesystem, the device /dev/<volume>
// for Block; and returns the SHA-256 of its first n bytes. The pod is as the namespace's
// restricted Pod Security level allows.
func readLikeKubeVirt(t *testing.T, ns, claim string, mode corev1.PersistentVolumeMode, n int64) string {
	const qemu = 107
	c := corev1.Container{Name: "compute", Image: volcheckImage, ImagePullPolicy: corev1.PullNever,
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}
	path := "/var/run/kubevirt-private/vmi-disks/rootdisk/" + tasksv1.VolumeDiskFile
	if mode == corev1.PersistentVolumeBlock {
		path = "/dev/rootdisk"
		c.VolumeDevices = []corev1.VolumeDevice{{Name: "rootdisk", DevicePath: path}}
	} else {
		c.VolumeMounts = []corev1.VolumeMount{{Name: "rootdisk", MountPath: filepath.Dir(path)}}
	}
	c.Args = []string{"read", path, fmt.Sprint(n)}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "virt-launcher-", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](qemu), RunAsGroup: ptr.To[int64](qemu),
				FSGroup: ptr.To[int64](qemu), RunAsNonRoot: ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{c},
			Volumes: []corev1.Volume{{Name: "rootdisk", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	NewWithT(t).Expect(k8s.Create(context.Background(), p)).To(Succeed())
	// finishVolcheck deletes the pod when it succeeded; a failed one would keep the claim.
	t.Cleanup(func() { k8s.Delete(context.Background(), p) })
	out := finishVolcheck(t, p)
	_, sum, ok := strings.Cut(strings.TrimSpace(out), "sha256=")
	NewWithT(t).Expect(ok).To(BeTrue(), "volcheck printed no sum: %s", out)
	return sum
}

// expectVolumeFreed deletes the Image and checks that its claim, its volume and the volume's
// storage on the node go with it.
func expectVolumeFreed(t *testing.T, ns, id string, pv *corev1.PersistentVolume) {
	g := NewWithT(t)
	ctx := context.Background()
	start := time.Now()
	g.Expect(k8s.Delete(ctx, &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: id}})).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: id}, &corev1.PersistentVolumeClaim{}))
	}, time.Minute, 100*time.Millisecond).Should(BeTrue(), func() string { return kubectlDescribe(ns, "pvc/"+id) })
	claimGone := time.Since(start)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pv), &corev1.PersistentVolume{}))
	}, time.Minute, 100*time.Millisecond).Should(BeTrue(), "the volume outlives its claim")
	t.Logf("Image deleted -> claim gone %s, -> volume gone %s", claimGone.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	checkFreed(t, pv, *pv.Spec.VolumeMode)
}

// TestImportIntoVolume imports a qcow2 into a new Filesystem and a new Block volume: the
// volume holds qemu-img's raw conversion (disk.img, or the device's first virtual-size bytes);
// a pod that uses the claim as a KubeVirt VirtualMachine does reads the same bytes; deleting
// the Image frees the claim, the volume and its storage on the node.
func TestImportIntoVolume(t *testing.T) {
	for _, mode := range []corev1.PersistentVolumeMode{corev1.PersistentVolumeFilesystem, corev1.PersistentVolumeBlock} {
		t.Run(string(mode), func(t *testing.T) {
			if _, err := os.Stat("/dev/loop-control"); err != nil && mode == corev1.PersistentVolumeBlock {
				t.Skip("SKIP: Block volumes need loop devices and this kernel has none (/dev/loop-control is missing; modprobe loop)")
			}
			got, pv, want := importIntoVolume(t, namespace, "volume-"+strings.ToLower(string(mode)), mode)
			id := got.Status.Result.ImageID
			NewWithT(t).Expect(readLikeKubeVirt(t, namespace, id, mode, got.Status.Image.VirtualSize)).To(Equal(want),
				"a VM's pod does not read the image from the claim")
			expectVolumeFreed(t, namespace, id, pv)
		})
	}
}

// TestImportInABrandNewNamespace imports into a namespace made now, with nothing in it: the
// store claim (the default destination) and a volume are both created by the operator.
func TestImportInABrandNewNamespace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-fresh-"}}
	g.Expect(k8s.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { deleteNamespace(t, ns) })
	const virtual = 32 << 20
	url, want := volumeSource(t, "fresh.qcow2", virtual, 8<<20)

	t.Run("Store", func(t *testing.T) {
		g := NewWithT(t)
		task := newTask("to-store", url, "qcow2", "raw")
		task.Namespace = ns.Name
		start := time.Now()
		create(t, task)
		got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
		t.Logf("store in a new namespace: task created -> success %s", time.Since(start).Round(100*time.Millisecond))
		pvc := &corev1.PersistentVolumeClaim{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: storeClaim}, pvc)).To(Succeed())
		g.Expect(pvc.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "image-import-operator"))
		g.Expect(pvc.Spec.StorageClassName).To(HaveValue(Equal(defaultStorageClass)))
		g.Expect(fileSum(t, filepath.Join(claimPath(t, ns.Name, storeClaim), got.Status.Result.ImageID), virtual)).To(Equal(want))
	})
	t.Run("Volume", func(t *testing.T) {
		task := volumeTask("to-volume", ns.Name, url, corev1.PersistentVolumeFilesystem, "64Mi")
		start := time.Now()
		create(t, task)
		got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
		t.Logf("volume in a new namespace: task created -> success %s", time.Since(start).Round(100*time.Millisecond))
		disk := filepath.Join(claimPath(t, ns.Name, got.Status.Result.ImageID), tasksv1.VolumeDiskFile)
		NewWithT(t).Expect(fileSum(t, disk, virtual)).To(Equal(want))
	})
}

// deleteNamespace deletes a test's namespace once its Images are gone (their cleanup runs in
// the namespace), and waits until the namespace's volumes are gone too.
func deleteNamespace(t *testing.T, ns *corev1.Namespace) {
	ctx := context.Background()
	var pvcs corev1.PersistentVolumeClaimList
	k8s.List(ctx, &pvcs, client.InNamespace(ns.Name))
	for _, task := range listTasks(ns.Name) {
		deleteWithImage(&task)
	}
	NewWithT(t).Eventually(func() int {
		var images tasksv1.ImageList
		k8s.List(ctx, &images, client.InNamespace(ns.Name))
		return len(images.Items)
	}, time.Minute, 500*time.Millisecond).Should(BeZero())
	k8s.Delete(ctx, ns)
	for _, p := range pvcs.Items {
		if p.Spec.VolumeName == "" {
			continue
		}
		NewWithT(t).Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: p.Spec.VolumeName}, &corev1.PersistentVolume{}))
		}, 2*time.Minute, 500*time.Millisecond).Should(BeTrue(), "volume %s of %s/%s outlives its namespace", p.Spec.VolumeName, ns.Name, p.Name)
	}
}

func listTasks(ns string) []tasksv1.ImageImportTask {
	var tasks tasksv1.ImageImportTaskList
	k8s.List(context.Background(), &tasks, client.InNamespace(ns))
	return tasks.Items
}

// TestTwentyVolumesAtOnce starts twenty imports into twenty new volumes at once: all succeed,
// each volume holds the image, on a volume of its own.
func TestTwentyVolumesAtOnce(t *testing.T) {
	const n, virtual = 20, 32 << 20
	url, want := volumeSource(t, "twenty.qcow2", virtual, 8<<20)
	times := watchClaims(t, namespace, "volumes-")
	var tasks []*tasksv1.ImageImportTask
	for i := range n {
		task := volumeTask(fmt.Sprintf("volumes-%02d", i), namespace, url, corev1.PersistentVolumeFilesystem, "64Mi")
		create(t, task)
		tasks = append(tasks, task)
	}
	created := time.Since(times.start)
	var done []*tasksv1.ImageImportTask
	for _, task := range tasks {
		done = append(done, waitFor(t, task, tasksv1.TaskSuccess, 5*time.Minute))
	}
	wall := time.Since(times.start) // the last success, within waitFor's 0.5 s poll
	paths := map[string]bool{}
	for _, got := range done {
		dir := claimPath(t, namespace, got.Status.Result.ImageID)
		NewWithT(t).Expect(fileSum(t, filepath.Join(dir, tasksv1.VolumeDiskFile), virtual)).To(Equal(want), got.Name)
		paths[dir] = true
	}
	times.close()
	NewWithT(t).Expect(paths).To(HaveLen(n), "every import has a volume of its own")
	lat := times.latencies()
	NewWithT(t).Expect(lat).To(HaveLen(n))
	t.Logf("%d imports into %d volumes: tasks created in %s; wall time to the last success %s; "+
		"claim created -> Bound: min %s, median %s, max %s", n, n, created.Round(100*time.Millisecond), wall.Round(100*time.Millisecond),
		lat[0].Round(100*time.Millisecond), lat[len(lat)/2].Round(100*time.Millisecond), lat[len(lat)-1].Round(100*time.Millisecond))
}
