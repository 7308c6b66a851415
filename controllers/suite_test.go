package controllers

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/test/policies"
)

// The suite runs a real kube-apiserver and etcd (envtest) and the manager
// with the real reconciler. envtest has no kube-controller-manager: Jobs
// never run and nothing is garbage-collected, so tests play the Job
// controller and the importer by writing Job and Pod status.

// testTTL and the store claim's bound are long: no task of the shared
// manager expires or gives up on its claim while the tests run. The tests
// of both run a manager of their own on a fake clock (startClockManager).
const (
	testTTL               = time.Hour
	testStoreClaimTimeout = time.Hour
)

// labelManager assigns a task to the manager of one test; the shared
// manager reconciles only the tasks without it.
const labelManager = "test.imageimport.io/manager"

var (
	testCfg     *rest.Config
	testScheme  = runtime.NewScheme()
	k8sClient   client.Client // uncached: assertions see the API server
	testMetrics *Metrics
	metricsAddr string
)

func TestMain(m *testing.M) {
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(tasksv1.AddToScheme(testScheme))
	// Every log line of the managers goes through panicWatch, which
	// remembers the panics they recovered; klog's too (informers).
	logger := logr.New(panicWatch{zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(os.Getenv("TEST_VERBOSE") != "")).GetSink()})
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane")
		os.Exit(1)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if testCfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		os.Exit(1)
	}
	k8sClient, err = client.New(testCfg, client.Options{Scheme: testScheme})
	if err != nil {
		panic(err)
	}
	if err := policies.Install(context.Background(), k8sClient, filepath.Join("..", "config", "policy")); err != nil {
		fmt.Fprintln(os.Stderr, "installing the admission policies:", err)
		os.Exit(1)
	}
	testMetrics = NewMetrics(metrics.Registry, k8sClient)
	metricsAddr = freeLoopbackAddr()

	managerStop = startManager(managerOptions{metricsBind: metricsAddr})
	code := m.Run()
	managerStop()
	// A panic a test did not see (it came after the test ended) fails the
	// suite all the same.
	if seen := recoveredPanics.since(0); len(seen) > 0 || reconcilePanics() > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the managers recovered %v panics in reconcilers; logged:\n%s\n",
			reconcilePanics(), strings.Join(seen, "\n"))
		code = 1
	}
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}

// managerStop stops the running manager, for the restart test.
var managerStop func()

type managerOptions struct {
	metricsBind string // "" for none
	// clock is the reconciler's; the real one when nil.
	clock clock.WithTicker
	// storeClaimTimeout is the reconciler's (testStoreClaimTimeout if zero).
	storeClaimTimeout time.Duration
	// importer edits the manager's importer configuration, if set.
	importer func(*ImporterConfig)
	// priorImportRecheck is the reconciler's (the default if zero).
	priorImportRecheck time.Duration
	// taskTTL is the reconciler's TaskTTL (testTTL if nil).
	taskTTL *time.Duration
	// only is the labelManager value of the tasks this manager reconciles;
	// "" for the shared manager, which reconciles the tasks without one.
	only string
}

// startManager runs a manager with the reconciler until the returned
// function is called; that function waits for it to stop.
func startManager(opts managerOptions) func() {
	stop, _, _ := startReconciler(opts)
	return stop
}

func startReconciler(opts managerOptions) (func(), *ImageImportTaskReconciler, *ImageReconciler) {
	op, values := selection.DoesNotExist, []string(nil)
	if opts.only != "" {
		op, values = selection.Equals, []string{opts.only}
	}
	mine, err := labels.NewRequirement(labelManager, op, values)
	if err != nil {
		panic(err)
	}
	mgr, err := ctrl.NewManager(testCfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: cmp.Or(opts.metricsBind, "0")},
		HealthProbeBindAddress: "0",
		// Several managers run in one process in these tests.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&tasksv1.ImageImportTask{}: {Label: labels.NewSelector().Add(*mine)},
			&tasksv1.Image{}:           {Label: labels.NewSelector().Add(*mine)},
		}},
	})
	if err != nil {
		panic(err)
	}
	importer := testImporterConfig()
	if opts.importer != nil {
		opts.importer(&importer)
	}
	r := &ImageImportTaskReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("image-import-operator"),
		Clock:                   cmp.Or[clock.WithTicker](opts.clock, clock.RealClock{}),
		Metrics:                 testMetrics,
		Importer:                importer,
		TaskTTL:                 ptr.Deref(opts.taskTTL, testTTL),
		StoreClaimTimeout:       cmp.Or(opts.storeClaimTimeout, testStoreClaimTimeout),
		MaxConcurrentReconciles: 4,
		ContainerCreatingGrace:  time.Second, // a stuck pod is told of in a test's time
		ImporterReleaseWait:     5 * time.Second,
		PriorImportRecheck:      opts.priorImportRecheck,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		panic(err)
	}
	images := &ImageReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("image-import-operator"),
		Clock:     r.Clock,
		Metrics:   testMetrics,
		Importer:  importer,
		// A failed cleanup Job is replaced in a test's time.
		CleanupRetry: 3 * time.Second,
		// A cancelled import goes on in a test's time once its pod ends.
		ImporterExitRecheck: time.Second,
	}
	if err := images.SetupWithManager(mgr); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			panic(err)
		}
	}()
	return func() { cancel(); <-done }, r, images
}

// startClockManager runs, for the rest of the test, a manager whose
// reconciler and work queue run on a fake clock, for the tasks that carry
// the returned labels. The clock follows real time, so that retries after
// an error still happen, and the test moves it on with Step.
func startClockManager(t *testing.T, storeClaimTimeout time.Duration) (*clocktesting.FakeClock, *ImageImportTaskReconciler, map[string]string) {
	t.Helper()
	fake := clocktesting.NewFakeClock(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				fake.Step(now.Sub(last))
				last = now
			}
		}
	}()
	id := strings.ToLower(rand.Text()[:12])
	stop, r, _ := startReconciler(managerOptions{clock: fake, storeClaimTimeout: storeClaimTimeout, only: id})
	t.Cleanup(func() { stop(); cancel() })
	return fake, r, map[string]string{labelManager: id}
}

// directReconciler is a task reconciler of a manager of the test's own,
// that reads the API server instead of the manager's cache: for the tasks
// labelled no-manager, which only the test's calls reconcile.
func directReconciler(t *testing.T) *ImageImportTaskReconciler {
	t.Helper()
	_, r, _ := startClockManager(t, 0)
	direct := *r
	var err error
	if direct.Client, err = client.New(testCfg, client.Options{Scheme: testScheme}); err != nil {
		t.Fatal(err)
	}
	return &direct
}

// startManagerFor runs, for the rest of the test, a manager with an
// importer configuration of its own for the tasks that carry the returned
// labels.
func startManagerFor(t *testing.T, edit func(*ImporterConfig)) map[string]string {
	t.Helper()
	id := strings.ToLower(rand.Text()[:12])
	stop, _, _ := startReconciler(managerOptions{importer: edit, only: id})
	t.Cleanup(stop)
	return map[string]string{labelManager: id}
}

func testImporterConfig() ImporterConfig {
	return ImporterConfig{
		Image:          "localhost/imageimport/importer:test",
		PullPolicy:     corev1.PullNever,
		StoreClaimName: "image-store",
		ScratchSize:    resource.MustParse("10Gi"),
		Limits:         ImportLimits{MaxImageSize: 64 << 30, MaxVirtualSize: 1 << 40, MinTransferRate: 1024, Sandbox: "required"},
		Args:           []string{"--allowed-hosts=images.test"},
	}
}

func freeLoopbackAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newNamespace creates a namespace of the test's own, with the image store
// claim that imports need.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := newNamespaceWithoutClaim(t)
	createStoreClaim(t, ns)
	return ns
}

// newNamespaceWithoutClaim creates a namespace of the test's own, and fails
// the test if a reconciler panics while it runs.
func newNamespaceWithoutClaim(t *testing.T) string {
	t.Helper()
	failOnPanics(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "iit-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// createStoreClaim creates the image store claim in ns. envtest runs no
// volume controller: it stays Pending, which is all the reconciler asks.
func createStoreClaim(t *testing.T, ns string) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: testImporterConfig().StoreClaimName},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
	}
	if err := k8sClient.Create(context.Background(), pvc); err != nil {
		t.Fatal(err)
	}
}

// A recovered panic is a bug, even when the deferred status patch saves
// the task: what came after the panic (events, metrics) is lost.
// controller-runtime (RecoverPanic, on by default) hands the panic to
// apimachinery's utilruntime.PanicHandlers, which log "Observed a panic"
// on the reconcile's logger, returns the error "panic: ... [recovered]"
// (logged as "Reconciler error") and counts it in
// controller_runtime_reconcile_panics_total.

// panicLog is what the managers logged about recovered panics.
type panicLog struct {
	mu   sync.Mutex
	seen []string
}

var recoveredPanics panicLog

func (l *panicLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, s)
}

func (l *panicLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

func (l *panicLog) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen[min(n, len(l.seen)):])
}

// panicWatch is a log sink that passes everything on and remembers the
// lines that tell of a recovered panic.
type panicWatch struct{ logr.LogSink }

func (w panicWatch) Info(level int, msg string, kv ...any) {
	w.watch(nil, msg, kv)
	w.LogSink.Info(level, msg, kv...)
}

func (w panicWatch) Error(err error, msg string, kv ...any) {
	w.watch(err, msg, kv)
	w.LogSink.Error(err, msg, kv...)
}

func (w panicWatch) watch(err error, msg string, kv []any) {
	if strings.Contains(msg, "Observed a panic") || (err != nil && strings.Contains(err.Error(), "[recovered]")) {
		recoveredPanics.add(fmt.Sprintf("%s: %v %v", msg, err, kv))
	}
}

func (w panicWatch) WithValues(kv ...any) logr.LogSink {
	return panicWatch{w.LogSink.WithValues(kv...)}
}
func (w panicWatch) WithName(name string) logr.LogSink { return panicWatch{w.LogSink.WithName(name)} }

// reconcilePanics is controller-runtime's count of the reconcilers' panics.
func reconcilePanics() float64 {
	return gathered("controller_runtime_reconcile_panics_total", map[string]string{"controller": "imageimporttask"}) +
		gathered("controller_runtime_reconcile_panics_total", map[string]string{"controller": "image"})
}

// failOnPanics fails the test when a reconciler panicked while it ran.
func failOnPanics(t *testing.T) {
	logged, counted := recoveredPanics.count(), reconcilePanics()
	t.Cleanup(func() {
		if seen := recoveredPanics.since(logged); len(seen) > 0 || reconcilePanics() > counted {
			t.Errorf("a reconciler panicked (%v recovered); logged:\n%s", reconcilePanics()-counted, strings.Join(seen, "\n"))
		}
	})
}

// gathered is the value of a counter or gauge, or the sample count of a
// histogram, with the given labels, in the registry the managers use; 0
// when there is none yet.
func gathered(name string, labels map[string]string) float64 {
	return gatheredFrom(metrics.Registry, name, labels)
}

// gatheredFrom is gathered from another registry than the manager's.
func gatheredFrom(reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	// An error is about other metrics (imageimport_tasks once the API
	// server has stopped): the families gathered are still right.
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
