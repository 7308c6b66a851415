package controllers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// The suite runs a real kube-apiserver and etcd (envtest) and the manager
// with the real reconciler. envtest has no kube-controller-manager: Jobs
// never run and nothing is garbage-collected, so tests play the Job
// controller and the importer by writing Job and Pod status.

const testTTL = 3 * time.Second

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
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(os.Getenv("TEST_VERBOSE") != "")))

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
	testMetrics = NewMetrics(metrics.Registry, k8sClient)
	metricsAddr = freeLoopbackAddr()

	managerStop = startManager(metricsAddr)
	code := m.Run()
	managerStop()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}

// managerStop stops the running manager, for the restart test.
var managerStop func()

// startManager runs a manager with the reconciler until the returned
// function is called; that function waits for it to stop.
func startManager(metricsBind string) func() {
	mgr, err := ctrl.NewManager(testCfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: metricsBind},
		HealthProbeBindAddress: "0",
		// Several managers run in one process in these tests.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		panic(err)
	}
	r := &ImageImportTaskReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("image-import-operator"),
		Clock:                   clock.RealClock{},
		Metrics:                 testMetrics,
		Importer:                testImporterConfig(),
		TaskTTL:                 testTTL,
		MaxConcurrentReconciles: 4,
	}
	if err := r.SetupWithManager(mgr); err != nil {
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
	return func() { cancel(); <-done }
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

// newNamespace creates a namespace of the test's own.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "iit-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
