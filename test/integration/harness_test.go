// Package integration runs the whole system but the kubelet in one test
// process: a real kube-apiserver and etcd (envtest), the real reconciler,
// the real Glance shim, and the real importer with real qemu-img, started
// for each import Job by the local runner (which plays the Job controller
// and the kubelet). Real Glance clients then drive it as users would.
package integration

import (
	"context"
	"fmt"

	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/controllers"
	"github.com/imageimport/image-import-operator/internal/glance"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
	"github.com/imageimport/image-import-operator/test/localrunner"
	"github.com/imageimport/image-import-operator/test/policies"
)

const importerImage = "localhost/imageimport/importer:integration"

var (
	testCfg   *rest.Config
	scheme    = runtime.NewScheme()
	k8sClient client.Client
	runner    *localrunner.Runner
	// sources serves the fixtures on 127.0.0.1.
	sources *httptest.Server
	// fixtures is the directory sources serves.
	fixtures string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(os.Getenv("TEST_VERBOSE") != "")))
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane")
		return 1
	}
	work, err := os.MkdirTemp("", "integration-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(work)
	importer := filepath.Join(work, "importer")
	if out, err := exec.Command("go", "build", "-o", importer, "../../cmd/importer").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the importer: %v\n%s", err, out)
		return 1
	}
	fixtures = filepath.Join(work, "fixtures")
	if err := os.Mkdir(fixtures, 0o755); err != nil {
		panic(err)
	}
	sources = httptest.NewServer(http.FileServer(http.Dir(fixtures)))
	defer sources.Close()

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if testCfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer env.Stop()
	if k8sClient, err = client.New(testCfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	if err := policies.Install(context.Background(), k8sClient, filepath.Join("..", "..", "config", "policy")); err != nil {
		fmt.Fprintln(os.Stderr, "installing the admission policies:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runner = &localrunner.Runner{
		Client: k8sClient, Image: importerImage, Program: importer,
		Dir: filepath.Join(work, "claims"),
		// Progress needs the pod's own service account token.
		DropArgs: []string{"--progress-task="},
		Log:      ctrl.Log.WithName("localrunner"),
	}
	runner.Start(ctx)
	stop, err := startManager(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the manager:", err)
		return 1
	}
	defer stop()
	return m.Run()
}

// startManager runs the operator's controllers as cmd/manager does.
func startManager(ctx context.Context) (func(), error) {
	mgr, err := ctrl.NewManager(testCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	importer := controllers.ImporterConfig{
		Image:          importerImage,
		PullPolicy:     corev1.PullNever,
		StoreClaimName: "image-store",
		ScratchSize:    resource.MustParse("10Gi"),
		Limits:         controllers.ImportLimits{MaxImageSize: 1 << 30, MaxVirtualSize: 1 << 40, MinTransferRate: 1024, Sandbox: "auto"},
		Args:           []string{"--allowed-hosts=127.0.0.1", "--allowed-ports="},
	}
	metrics := controllers.NewMetrics(prometheus.NewRegistry(), mgr.GetClient())
	tasks := &controllers.ImageImportTaskReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("image-import-operator"),
		Clock:                   clock.RealClock{},
		Metrics:                 metrics,
		Importer:                importer,
		TaskTTL:                 controllers.DefaultTaskTTL,
		StoreClaimTimeout:       time.Minute,
		MaxConcurrentReconciles: 4,
	}
	if err := tasks.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	images := &controllers.ImageReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("image-import-operator"),
		Clock:                   clock.RealClock{},
		Metrics:                 metrics,
		Importer:                importer,
		MaxConcurrentReconciles: 4,
	}
	if err := images.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			ctrl.Log.Error(err, "manager")
		}
	}()
	return func() { cancel(); <-done }, nil
}

// project is a Glance project served by a shim of its own: a namespace
// with the image store's claim, and the shim that maps the project to it.
type project struct {
	namespace string
	shim      *httptest.Server
}

// newProject creates a namespace with the store claim and serves a shim
// for it, with keystone-headers auth behind a stand-in for
// keystonemiddleware (the token "user:project:roles" is the identity).
func newProject(t *testing.T, options ...func(*glance.Server)) *project {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "integration-"}}
	if err := k8sClient.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "image-store"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if err := k8sClient.Create(ctx, claim); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(testCfg, cache.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := glance.AddIndexes(cctx, c); err != nil {
		t.Fatal(err)
	}
	go c.Start(cctx)
	c.WaitForCacheSync(cctx)
	p := urlpolicy.Default()
	p.AllowedHosts, p.AllowedPorts = []string{"127.0.0.1"}, nil
	policy, err := urlpolicy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	srv := &glance.Server{
		Cache: c, Writer: k8sClient, APIReader: k8sClient,
		// The shim reads the store as a shim that mounts it would.
		ImageData:  glance.StoreDir(runner.ClaimDir(ns.Name, "image-store")),
		Auth:       glance.NewKeystoneHeaders(glance.PolicyAdmin, "http://127.0.0.1:5000/v3"),
		Namespaces: glance.SingleNamespace(ns.Name),
		URLPolicy:  policy,
		Resolve:    func(context.Context, string) error { return nil },
		Log:        ctrl.Log.WithName("shim"),
	}
	for _, o := range options {
		o(srv)
	}
	dumpOnFailure(t, ns.Name)
	shim := httptest.NewServer(keystoneStandIn(srv))
	t.Cleanup(shim.Close)
	return &project{namespace: ns.Name, shim: shim}
}

// converting makes the shim convert web-download imports to format, as
// Glance's image_conversion plugin with output_format.
func converting(format tasksv1.DiskFormat) func(*glance.Server) {
	return func(s *glance.Server) { s.ConversionFormat = format }
}

// keystoneStandIn plays keystonemiddleware: it turns the token
// "user:project:role[,role]" into the identity headers.
func keystoneStandIn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range []string{"X-Identity-Status", "X-Project-Id", "X-User-Id", "X-Roles", "X-Tenant-Id"} {
			r.Header.Del(h)
		}
		token, err := url.PathUnescape(r.Header.Get("X-Auth-Token"))
		if parts := strings.SplitN(token, ":", 3); err == nil && len(parts) == 3 {
			r.Header.Set("X-Identity-Status", "Confirmed")
			r.Header.Set("X-User-Id", parts[0])
			r.Header.Set("X-Project-Id", parts[1])
			r.Header.Set("X-Roles", parts[2])
		}
		next.ServeHTTP(w, r)
	})
}

// fixture makes a disk image with qemu-img: a virtual disk of size bytes
// with a pattern written at a few offsets, in format, served by sources.
// It returns the URL and the raw bytes of the disk.
func fixture(t *testing.T, name, format string, size int64) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	raw := make([]byte, size)
	for _, off := range []int64{0, size / 3, size - 4096} {
		copy(raw[off:], fmt.Sprintf("integration %s at %d\n", name, off))
	}
	rawPath := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(fixtures, name)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, rawPath, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.Remove(out) })
	return sources.URL + "/" + name, raw
}

// freePort is a loopback port nothing listens on.

// dumpOnFailure logs the namespace's tasks, images and Jobs when the test
// fails: what the system did, for the reader of a CI log.
func dumpOnFailure(t *testing.T, namespace string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx := context.Background()
		var tasks tasksv1.ImageImportTaskList
		var imgs tasksv1.ImageList
		var jobs batchv1.JobList
		var pods corev1.PodList
		for _, l := range []client.ObjectList{&tasks, &imgs, &jobs, &pods} {
			if err := k8sClient.List(ctx, l, client.InNamespace(namespace)); err != nil {
				t.Logf("listing %T: %v", l, err)
			}
		}
		for _, x := range tasks.Items {
			t.Logf("task %s: %s %q image=%v result=%v", x.Name, x.Status.Status, x.Status.Message, x.Spec.Image, x.Status.Result)
		}
		for _, x := range imgs.Items {
			t.Logf("image %s: %s conditions=%v", x.Name, x.Status.Status, x.Status.Conditions)
		}
		for _, x := range jobs.Items {
			t.Logf("job %s: %+v", x.Name, x.Status.Conditions)
		}
		for _, x := range pods.Items {
			t.Logf("pod %s: %s %+v", x.Name, x.Status.Phase, x.Status.ContainerStatuses)
		}
	})
}

// served is the file sources serves as name.
func served(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
