package glance

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
	"github.com/imageimport/image-import-operator/test/policies"
)

// The shim runs in process against a real kube-apiserver and etcd
// (envtest), reading through a real controller-runtime cache.

var (
	testCfg    *rest.Config
	testScheme = runtime.NewScheme()
	k8sClient  client.Client
	taskCache  cache.Cache
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
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if testCfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		os.Exit(1)
	}
	if k8sClient, err = client.New(testCfg, client.Options{Scheme: testScheme}); err != nil {
		panic(err)
	}
	if err := policies.Install(context.Background(), k8sClient, filepath.Join("..", "..", "config", "policy")); err != nil {
		fmt.Fprintln(os.Stderr, "installing the admission policies:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if taskCache, err = cache.New(testCfg, cache.Options{Scheme: testScheme}); err != nil {
		panic(err)
	}
	if err := AddIndexes(ctx, taskCache); err != nil {
		panic(err)
	}
	go taskCache.Start(ctx)
	taskCache.WaitForCacheSync(ctx)

	code := m.Run()
	cancel()
	env.Stop()
	os.Exit(code)
}

// shim is a shim under test, with its own namespace.
type shim struct {
	*httptest.Server
	namespace string
	srv       *Server
}

// newShim serves a shim with keystone-headers auth behind a stand-in for
// keystonemiddleware: the token "user:project:role[,role]" (what the
// recorded real Glance accepted) becomes the identity headers.
func newShim(t *testing.T, policy Policy) *shim {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return newShimWith(t, policy, SingleNamespace(ns.Name))
}

// newShimWith serves a shim that maps projects to namespaces as told.
func newShimWith(t *testing.T, policy Policy, namespaces Namespaces) *shim {
	t.Helper()
	p := urlpolicy.Default()
	p.AllowedHosts, p.AllowedPorts = []string{"127.0.0.1"}, nil
	compiled, err := urlpolicy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{
		Cache: taskCache, Writer: k8sClient, APIReader: k8sClient,
		Auth:       NewKeystoneHeaders(policy, "http://127.0.0.1:5000/v3"),
		Namespaces: namespaces,
		URLPolicy:  compiled,
		Resolve:    func(context.Context, string) error { return nil },
		Log:        ctrl.Log.WithName("shim"),
	}
	ts := httptest.NewServer(fakeKeystone(srv))
	t.Cleanup(ts.Close)
	single, _ := namespaces.(SingleNamespace)
	if single != "" {
		// Image ids are unique across namespaces, and an admin lists every
		// namespace's images: each test leaves none behind.
		t.Cleanup(func() { deleteImages(t, string(single)) })
	}
	return &shim{Server: ts, namespace: string(single), srv: srv}
}

// fakeKeystone stands in for keystonemiddleware in front of the shim.
func fakeKeystone(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range []string{"X-Identity-Status", "X-Project-Id", "X-User-Id", "X-Roles", "X-Tenant-Id"} {
			r.Header.Del(h)
		}
		if token := r.Header.Get("X-Auth-Token"); token != "" {
			user, project, roles := "admin", "admin", "admin"
			if parts := strings.SplitN(unescape(token), ":", 3); len(parts) == 3 {
				user, project, roles = parts[0], parts[1], parts[2]
			}
			r.Header.Set("X-Identity-Status", "Confirmed")
			r.Header.Set("X-User-Id", user)
			r.Header.Set("X-Project-Id", project)
			r.Header.Set("X-Roles", roles)
		}
		next.ServeHTTP(w, r)
	})
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
