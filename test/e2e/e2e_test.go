//go:build e2e

// Package e2e runs the whole system on the local cluster of hack/local-cluster
// (`make test-e2e` brings it up): real kubelet, containerd, Jobs, importer
// pods with qemu-img, the image store and volumes on the node (the default
// StorageClass's local volumes), the Glance shim on
// 127.0.0.1:9292. Sources are served by the test on the node address.
package e2e

import (
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

const (
	nodeIP    = "10.88.0.2" // hack/local-cluster/lib.sh
	namespace = "images"
	shimURL   = "http://127.0.0.1:9292"
)

var (
	k8s     client.Client
	root    string // the repository
	kubectl string
	srcDir  string // what the source server serves
	srcURL  string
	stall   atomic.Bool  // the /slow/ files stall mid-stream while set
	served  atomic.Int64 // bytes of /slow/ files sent
)

const managerNamespace = "image-import-system"

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "KUBECONFIG must point at the local cluster: run 'make test-e2e':", err)
		os.Exit(1)
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	root, _ = filepath.Abs("../..")
	kubectl = filepath.Join(root, "bin/k8s/1.37.2/kubectl")
	srcDir, _ = os.MkdirTemp("", "e2e-sources")
	defer os.RemoveAll(srcDir)

	// The tests serve their sources on a port of their own: a fixed one (the quickstart's 8000,
	// say) may be a user's server, and an import from it would test the user's files.
	l, err := net.Listen("tcp", nodeIP+":0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot serve the test sources on the node address %s (is the local cluster up? 'make test-e2e' brings it up): %v\n", nodeIP, err)
		os.Exit(1)
	}
	srcURL = "http://" + l.Addr().String()
	go http.Serve(l, http.HandlerFunc(serveSource))
	os.Exit(m.Run())
}

// serveSource serves srcDir; /slow/NAME is sent at 1 MiB/s and stalls
// while stall is set, so that tests can act while an import runs.
func serveSource(w http.ResponseWriter, r *http.Request) {
	name, slow := strings.CutPrefix(r.URL.Path, "/slow/")
	if !slow {
		http.FileServer(http.Dir(srcDir)).ServeHTTP(w, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(srcDir, filepath.Base(name)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	for off := 0; off < len(data); off += 1 << 20 {
		for stall.Load() {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		n, _ := w.Write(data[off:min(off+1<<20, len(data))])
		served.Add(int64(n))
		w.(http.Flusher).Flush()
		time.Sleep(time.Second)
	}
}

func newTask(name, url, format, target string) *tasksv1.ImageImportTask {
	return &tasksv1.ImageImportTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: tasksv1.ImageImportTaskSpec{Type: tasksv1.TaskTypeImport, Input: tasksv1.TaskInput{
			ImportFrom: url, ImportFromFormat: tasksv1.DiskFormat(format),
			ImageProperties: &tasksv1.ImageProperties{DiskFormat: tasksv1.DiskFormat(target), ContainerFormat: "bare"},
		}},
	}
}

func create(t *testing.T, task *tasksv1.ImageImportTask) {
	t.Helper()
	k8s.Delete(context.Background(), task)
	NewWithT(t).Eventually(func() error { return k8s.Create(context.Background(), task) }, 30*time.Second).Should(Succeed())
	t.Cleanup(func() { deleteWithImage(task) })
}

// deleteWithImage deletes a task and the Image it made: deleting a task
// keeps its image (as in Glance), and the store would only grow.
func deleteWithImage(task *tasksv1.ImageImportTask) {
	ctx := context.Background()
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(task), task); err == nil {
		if id := task.Labels[tasksv1.LabelImageID]; id != "" {
			k8s.Delete(ctx, &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: task.Namespace, Name: id}})
		}
	}
	k8s.Delete(ctx, task)
}

func waitFor(t *testing.T, task *tasksv1.ImageImportTask, status tasksv1.TaskStatus, timeout time.Duration) *tasksv1.ImageImportTask {
	t.Helper()
	got := &tasksv1.ImageImportTask{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(Succeed())
		if got.Status.Status.Terminal() && got.Status.Status != status {
			// No transition leaves a terminal status: say so now, not at the timeout.
			StopTrying(fmt.Sprintf("the task is %s, not %s: %s", got.Status.Status, status, got.Status.Message)).Now()
		}
		g.Expect(got.Status.Status).To(Equal(status), "message: %s", got.Status.Message)
	}, timeout, 500*time.Millisecond).Should(Succeed())
	return got
}

func sums(t *testing.T, path string) (string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, s := md5.Sum(b), sha512.Sum512(b)
	return hex.EncodeToString(m[:]), hex.EncodeToString(s[:])
}

// TestImportWithKubectl imports a 100 MiB qcow2 applied with kubectl and
// checks the stored bytes against qemu-img's own conversion.
func TestImportWithKubectl(t *testing.T) {
	g := NewWithT(t)
	raw := testimages.Raw(t, t.TempDir(), 100<<20)
	qcow2 := filepath.Join(srcDir, "disk100.qcow2")
	testimages.QemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
	manifest := fmt.Sprintf(`apiVersion: tasks.imageimport.io/v1alpha1
kind: ImageImportTask
metadata: {name: kubectl-import, namespace: %s}
spec:
  type: import
  input:
    importFrom: %s/disk100.qcow2
    importFromFormat: qcow2
    imageProperties: {diskFormat: raw, containerFormat: bare, name: disk100}
`, namespace, srcURL)
	task := &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{Name: "kubectl-import", Namespace: namespace}}
	k8s.Delete(context.Background(), task)
	t.Cleanup(func() { deleteWithImage(task) })
	start := time.Now()
	apply := exec.Command(kubectl, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(manifest)
	out, err := apply.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
	t.Logf("kubectl apply -> success for a 100 MiB qcow2: %s", time.Since(start).Round(100*time.Millisecond))

	stored := storePath(t, got.Status.Result.ImageID)
	want := filepath.Join(t.TempDir(), "want.raw")
	testimages.QemuImg(t, "convert", "-f", "qcow2", "-O", "raw", qcow2, want)
	testimages.QemuImg(t, "compare", "-f", "raw", "-F", "raw", want, stored)
	m5, s512 := sums(t, stored)
	g.Expect(got.Status.Image.Checksum).To(Equal(m5))
	g.Expect(got.Status.Image.OSHashValue).To(Equal(s512))
	g.Expect(got.Status.Image.VirtualSize).To(Equal(int64(100 << 20)))
	g.Expect(got.Status.Image.SourceFormat).To(Equal("qcow2"))
}

// TestImportWithGlanceCLI goes through the shim with python-glanceclient:
// a task, then the image it made, through the images API.
func TestImportWithGlanceCLI(t *testing.T) {
	g := NewWithT(t)
	testimages.QemuImg(t, "create", "-f", "qcow2", filepath.Join(srcDir, "small.qcow2"), "16M")
	glance := func(args ...string) string {
		cmd := exec.Command("glance", append([]string{"--os-image-url", shimURL, "--os-auth-token", "local"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
		return string(out)
	}
	out := glance("task-create", "--type", "import", "--input",
		fmt.Sprintf(`{"import_from": "%s/small.qcow2", "import_from_format": "qcow2", "image_properties": {"disk_format": "qcow2", "container_format": "bare"}}`, srcURL))
	id := field(out, "id")
	g.Expect(id).To(HaveLen(36), out)
	g.Eventually(func() string { return field(glance("task-show", id), "status") }, 3*time.Minute, time.Second).Should(Equal("success"))
	result := field(glance("task-show", id), "result") // {"image_id": "..."}
	imageID := regexp.MustCompile(`[0-9a-f-]{36}`).FindString(result)
	g.Expect(imageID).NotTo(BeEmpty(), result)
	g.Expect(storePath(t, imageID)).To(BeARegularFile())
	// The task's image is an image the images API shows.
	show := glance("image-show", imageID)
	g.Expect(field(show, "status")).To(Equal("active"), show)
	g.Expect(field(show, "disk_format")).To(Equal("qcow2"), show)
	glance("image-delete", imageID)
}

func field(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) >= 3 && strings.TrimSpace(cols[1]) == name {
			return strings.TrimSpace(cols[2])
		}
	}
	return ""
}

func TestFailuresCarryTheirReason(t *testing.T) {
	dir := t.TempDir()
	for _, h := range testimages.HostileCorpus(t, dir) {
		if h.Name == "qcow2 with a backing file" {
			data, _ := os.ReadFile(h.Path)
			os.WriteFile(filepath.Join(srcDir, "backing.qcow2"), data, 0o644)
		}
	}
	for name, tc := range map[string]struct{ url, why string }{
		"missing-source": {srcURL + "/does-not-exist.qcow2", "answered HTTP 404 Not Found"},
		"backing-file":   {srcURL + "/backing.qcow2", "backing file"},
	} {
		t.Run(name, func(t *testing.T) {
			task := newTask(name, tc.url, "qcow2", "raw")
			create(t, task)
			got := waitFor(t, task, tasksv1.TaskFailure, 3*time.Minute)
			NewWithT(t).Expect(got.Status.Message).To(ContainSubstring(tc.why))
			NewWithT(t).Expect(got.Status.Attempts).To(Equal(int32(1)), "a permanent failure is not retried")
		})
	}
}

func jobsOf(t *testing.T, task *tasksv1.ImageImportTask) []batchv1.Job {
	var jobs batchv1.JobList
	if err := k8s.List(context.Background(), &jobs, client.InNamespace(namespace), client.MatchingLabels{tasksv1.LabelTaskUID: string(task.UID)}); err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

func podsOf(t *testing.T, task *tasksv1.ImageImportTask) []corev1.Pod {
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(namespace), client.MatchingLabels{tasksv1.LabelTaskUID: string(task.UID)}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func slowSource(t *testing.T, name string) string {
	t.Helper()
	raw := testimages.Raw(t, t.TempDir(), 24<<20)
	data, _ := os.ReadFile(raw)
	os.WriteFile(filepath.Join(srcDir, name), data, 0o644)
	return srcURL + "/slow/" + name
}

func TestDeletingARunningTaskRemovesItsJobAndPod(t *testing.T) {
	g := NewWithT(t)
	stall.Store(true)
	defer stall.Store(false)
	task := newTask("delete-me", slowSource(t, "delete.raw"), "raw", "raw")
	create(t, task)
	waitFor(t, task, tasksv1.TaskProcessing, 2*time.Minute)
	g.Expect(jobsOf(t, task)).To(HaveLen(1))
	g.Expect(k8s.Delete(context.Background(), task, client.PropagationPolicy(metav1.DeletePropagationForeground))).To(Succeed())
	g.Eventually(func() int { return len(jobsOf(t, task)) + len(podsOf(t, task)) }, 2*time.Minute, time.Second).Should(BeZero())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(task), &tasksv1.ImageImportTask{}))
	}, time.Minute).Should(BeTrue())
}

func managerPods(t *testing.T) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := k8s.List(context.Background(), &pods, client.InNamespace(managerNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

func TestManagerKilledMidImport(t *testing.T) {
	g := NewWithT(t)
	task := newTask("survive-restart", slowSource(t, "restart.raw"), "raw", "raw")
	create(t, task)
	waitFor(t, task, tasksv1.TaskProcessing, 2*time.Minute)
	// The importer pushes its progress into the task's status as it goes.
	g.Eventually(func(g Gomega) {
		got := &tasksv1.ImageImportTask{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(Succeed())
		g.Expect(got.Status.Progress).NotTo(BeNil())
		g.Expect(got.Status.Progress.BytesDone).To(BeNumerically(">", 0))
		g.Expect(got.Status.Progress.BytesTotal).To(Equal(int64(24 << 20)))
		g.Expect(got.Status.Progress.Percent).NotTo(BeNil())
	}, time.Minute, time.Second).Should(Succeed())
	// Hold the import mid-stream while the manager dies and a new one takes over: the new
	// manager must find the Job running, not finished, and adopt it.
	stall.Store(true)
	defer stall.Store(false)
	old := managerPods(t)
	g.Expect(old).To(HaveLen(1))
	out, err := exec.Command(kubectl, "-n", managerNamespace, "delete", "pod", old[0].Name, "--grace-period=0", "--force").CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	held := served.Load() // at most the chunk in flight when the stall began comes after
	g.Eventually(func(g Gomega) {
		pods := managerPods(t)
		g.Expect(pods).To(HaveLen(1))
		g.Expect(pods[0].Name).NotTo(Equal(old[0].Name))
		g.Expect(pods[0].Status.Conditions).To(ContainElement(And(
			HaveField("Type", corev1.PodReady), HaveField("Status", corev1.ConditionTrue))))
	}, 45*time.Second, 500*time.Millisecond).Should(Succeed(), "a new manager runs")
	g.Expect(served.Load()).To(BeNumerically("<=", held+1<<20), "the source stalled while the manager restarted")
	g.Expect(served.Load()).To(BeNumerically("<", 24<<20), "the import is still under way")
	mid := &tasksv1.ImageImportTask{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(task), mid)).To(Succeed())
	g.Expect(mid.Status.Status).To(Equal(tasksv1.TaskProcessing))
	jobs := jobsOf(t, task)
	g.Expect(jobs).To(HaveLen(1))
	g.Expect(jobs[0].Status.Active).To(Equal(int32(1)), "the Job still runs its pod")
	stall.Store(false)
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
	g.Expect(jobsOf(t, task)).To(HaveLen(1), "the new manager adopted the Job")
	g.Expect(got.Status.Attempts).To(Equal(int32(1)), "the import ran once")
}

func TestTwentyTasksAtOnce(t *testing.T) {
	testimages.QemuImg(t, "create", "-f", "qcow2", filepath.Join(srcDir, "many.qcow2"), "32M")
	var tasks []*tasksv1.ImageImportTask
	for i := range 20 {
		task := newTask(fmt.Sprintf("many-%02d", i), srcURL+"/many.qcow2", "qcow2", "raw")
		create(t, task)
		tasks = append(tasks, task)
	}
	images := map[string]bool{}
	for _, task := range tasks {
		got := waitFor(t, task, tasksv1.TaskSuccess, 5*time.Minute)
		NewWithT(t).Expect(storePath(t, got.Status.Result.ImageID)).To(BeARegularFile())
		images[got.Status.Result.ImageID] = true
	}
	NewWithT(t).Expect(images).To(HaveLen(20), "every task stored an image of its own")
}

// TestNetworkStaysOnTheMachine checks the guards hack/local-cluster/up.sh
// sets, without sending a packet anywhere: pods cannot forward off the pod
// network, service IPs are local, and the control plane listens only on the
// node's own interface or loopback.
func TestNetworkStaysOnTheMachine(t *testing.T) {
	g := NewWithT(t)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(ipt, "-t", "mangle", "-S", "FORWARD").CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		g.Expect(lines).To(ContainElement("-A FORWARD -i iiobr0 ! -o iiobr0 -j DROP"), ipt)
		g.Expect(lines[1]).To(Equal("-A FORWARD -i iiobr0 ! -o iiobr0 -j DROP"), "%s: the drop comes first", ipt)
	}
	nat, _ := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput()
	g.Expect(string(nat)).NotTo(ContainSubstring("10.244.0.0/24 -j MASQUERADE"), "pods are never masqueraded")
	routes, _ := exec.Command("ip", "route", "show", "table", "local", "type", "local").CombinedOutput()
	g.Expect(string(routes)).To(ContainSubstring("local 10.96.0.0/16 dev lo"))
	listening, _ := exec.Command("ss", "-ltnH").CombinedOutput()
	for _, port := range []string{":6443", ":10250", ":2379"} {
		for _, line := range strings.Split(string(listening), "\n") {
			if f := strings.Fields(line); len(f) >= 4 && strings.HasSuffix(f[3], port) {
				g.Expect(f[3]).To(Or(HavePrefix(nodeIP+":"), HavePrefix("127.0.0.1:")), "a control-plane port open beyond the machine")
			}
		}
	}
}

// TestTheSampleWorks applies config/samples as a user would, its image served
// by the test: the sample's URL (the quickstart's server on port 8000) becomes
// the test's own server, so a user's server there plays no part.
func TestTheSampleWorks(t *testing.T) {
	g := NewWithT(t)
	testimages.QemuImg(t, "create", "-f", "qcow2", filepath.Join(srcDir, "cirros.qcow2"), "64M")
	sample, err := os.ReadFile(filepath.Join(root, "config/samples/tasks_v1alpha1_imageimporttask.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	const sampleURL = "http://" + nodeIP + ":8000/cirros.qcow2"
	g.Expect(string(sample)).To(ContainSubstring("importFrom: "+sampleURL), "the sample no longer imports what this test serves")
	manifest := strings.Replace(string(sample), sampleURL, srcURL+"/cirros.qcow2", 1)
	task := &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{Name: "cirros", Namespace: namespace}}
	k8s.Delete(context.Background(), task)
	t.Cleanup(func() { deleteWithImage(task) })
	g.Eventually(func() error {
		apply := exec.Command(kubectl, "-n", namespace, "apply", "-f", "-")
		apply.Stdin = strings.NewReader(manifest)
		if out, err := apply.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}, 30*time.Second).Should(Succeed())
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)
	g.Expect(got.Status.Image.VirtualSize).To(Equal(int64(64 << 20)))
}
