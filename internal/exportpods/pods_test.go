package exportpods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/go-logr/logr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/imageexport"
)

// k8sClient is the cluster's admin; asShim acts as the Glance shim's
// service account, with the ClusterRole config/shim gives it and under the
// admission policies of config/policy, as the export pods are made in a
// deployment.
var k8sClient, asShim client.Client

// testImage is the export pods' image, as the shim's ConfigMap names it.
const testImage = "localhost/imageimport/importer:test"

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane")
		os.Exit(1)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	if asShim, err = shimClient(cfg, scheme); err != nil {
		fmt.Fprintln(os.Stderr, "acting as the Glance shim:", err)
		os.Exit(1)
	}
	code := m.Run()
	env.Stop()
	os.Exit(code)
}

// kubelet plays the kubelet for the export pods of ns: it runs each new
// one as a real Server on a loopback port over dir, with the pod's own
// arguments, and reports it running and ready at 127.0.0.1.
func kubelet(t *testing.T, ns, dir string, port int) (started func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	count := make(chan int, 1)
	count <- 0
	go func() {
		for ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			var pods corev1.PodList
			if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
				continue
			}
			for i := range pods.Items {
				pod := &pods.Items[i]
				if pod.Status.Phase != corev1.PodPending || pod.DeletionTimestamp != nil {
					continue
				}
				if n := <-count; n == 0 { // one server for every pod: they all have the same arguments
					hash := strings.TrimPrefix(pod.Spec.Containers[0].Args[3], "--token-sha256=")
					l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
					if err != nil {
						t.Error(err)
						return
					}
					go (&imageexport.Server{Dir: dir, TokenSHA256: hash, IdleTimeout: time.Minute, Log: logr.Discard()}).Serve(ctx, l)
					count <- n
				} else {
					count <- n
				}
				pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
				if err := k8sClient.Status().Update(ctx, pod); err != nil {
					t.Error(err)
				}
				count <- <-count + 1
			}
		}
	}()
	return func() int { n := <-count; count <- n; return n }
}

// newExport makes what a test of Pods needs: a namespace, a store
// directory holding image "img", Pods on a free loopback port, and the
// Image whose location is that file.
func newExport(t *testing.T, startTimeout time.Duration) (*corev1.Namespace, string, *Pods, *tasksv1.Image) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "export-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "img"), []byte("image bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := &Pods{Client: asShim, Image: testImage, PullPolicy: corev1.PullIfNotPresent, Token: testToken,
		IdleTimeout: time.Minute, StartTimeout: startTimeout, Port: port, HTTP: http.DefaultClient}
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "img"},
		Status: tasksv1.ImageStatus{Location: "pvc://" + ns.Name + "/image-store/img"}}
	return ns, dir, p, img
}

func TestPodsStartAnExportPodAndReadThroughIt(t *testing.T) {
	ctx := context.Background()
	ns, dir, p, img := newExport(t, 20*time.Second)
	started := kubelet(t, ns.Name, dir, p.Port)
	read := func(offset int64) string {
		t.Helper()
		f, size, err := p.Open(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if size != int64(len("image bytes")) {
			t.Fatalf("size %d", size)
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(0); got != "image bytes" {
		t.Fatalf("read: %q", got)
	}
	if got := read(6); got != "bytes" {
		t.Fatalf("read from offset 6: %q", got)
	}
	if n := started(); n != 1 {
		t.Fatalf("%d export pods started for two reads, want 1", n)
	}
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v %d", err, len(pods.Items))
	}
	pod := pods.Items[0]
	spec := pod.Spec
	if !spec.Volumes[0].PersistentVolumeClaim.ReadOnly || !spec.Containers[0].VolumeMounts[0].ReadOnly ||
		*spec.AutomountServiceAccountToken || !*spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem {
		t.Fatalf("the export pod is not read-only and tokenless: %+v", spec)
	}
	if strings.Contains(fmt.Sprint(spec), testToken) {
		t.Fatal("the export pod's spec holds the token")
	}

	// An export pod that exited once idle is replaced.
	pod.Status.Phase = corev1.PodSucceeded
	if err := k8sClient.Status().Update(ctx, &pod); err != nil {
		t.Fatal(err)
	}
	if got := read(0); got != "image bytes" {
		t.Fatalf("read after the pod ended: %q", got)
	}
	if n := started(); n != 2 {
		t.Fatalf("%d export pods started, want a second one once the first ended", n)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&pod), &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ended export pod was not deleted: %v", err)
	}
	for _, location := range []string{"pvc://" + ns.Name + "/image-store/../etc/passwd", "pvc://other/image-store/img", "/img", "pvc://" + ns.Name + "/image-store/.img.partial-1"} {
		bad := img.DeepCopy()
		bad.Status.Location = location
		if _, _, err := p.Open(ctx, bad); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("location %q: %v, want fs.ErrNotExist", location, err)
		}
	}
	gone := img.DeepCopy()
	gone.Name, gone.Status.Location = "gone", "pvc://"+ns.Name+"/image-store/gone"
	if _, _, err := p.Open(ctx, gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an image not in the store: %v, want fs.ErrNotExist", err)
	}
}

// A pod that copies an export pod's labels, ready and reachable, never
// gets a request (and so never the token); concurrent first downloads
// start one export pod, not one each.
func TestPodsTrustOnlyTheirOwnPodAndStartOne(t *testing.T) {
	ctx := context.Background()
	ns, dir, p, img := newExport(t, 20*time.Second)
	port := p.Port

	// The impostor: our labels, running and ready at an address of its own
	// where a server records what it is sent.
	var leaked atomic.Bool
	trap := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
	}))
	trapListener, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	trap.Listener.Close()
	trap.Listener = trapListener
	trap.Start()
	defer trap.Close()
	impostor := p.desiredPod(ns.Name, "image-store")
	impostor.GenerateName, impostor.Name = "", "impostor"
	if err := k8sClient.Create(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	impostor.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.2",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := k8sClient.Status().Update(ctx, impostor); err != nil {
		t.Fatal(err)
	}

	started := kubelet(t, ns.Name, dir, port)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, _, err := p.Open(ctx, img)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(f)
			f.Close()
			if string(b) != "image bytes" {
				t.Errorf("read %q", b)
			}
		}()
	}
	wg.Wait()
	if n := started(); n != 1 {
		t.Errorf("%d export pods started for 8 concurrent downloads, want 1", n)
	}
	if leaked.Load() {
		t.Error("the impostor pod was sent a token")
	}
}

// An export pod that never becomes ready is deleted, so that the next
// download starts another instead of waiting on it forever.
func TestPodsDeleteAPodThatNeverBecomesReady(t *testing.T) {
	ctx := context.Background()
	ns, _, p, img := newExport(t, time.Second)
	if _, _, err := p.Open(ctx, img); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("Open: %v, want a not-ready error", err)
	}
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Fatalf("%d pods left after the start timeout, want none", len(pods.Items))
	}
}

const testToken = "a token only the shim knows"
