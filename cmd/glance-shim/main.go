// Command glance-shim serves the OpenStack Glance v2 tasks and images APIs
// on top of ImageImportTask and Image resources, so that Glance clients
// work unmodified.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/exportpods"
	"github.com/imageimport/image-import-operator/internal/glance"
	"github.com/imageimport/image-import-operator/internal/imageexport"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "glance-shim:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		bind, probeAddr, authMode, access, wwwAuth, project string
		nsMode, namespace, nsTemplate                       string
		storeDir, webDownloadFailure                        string
		exportImage, conversionFormat                       string
		exportIdle                                          time.Duration
		policy                                              = urlpolicy.Default()
		limits                                              = defaultTimeouts
	)
	flag.StringVar(&bind, "bind-address", ":9292", "Address the Glance API listens on (Glance's port).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8082", "Address of the health and readiness probes.")
	flag.StringVar(&authMode, "auth", "keystone-headers", "How callers are authenticated: keystone-headers (behind keystonemiddleware), kubernetes (bearer tokens, RBAC decides) or none (local use only).")
	flag.StringVar(&access, "tasks-api-access", "admin", "Who may use the task endpoints with keystone-headers: admin (Glance's default) or member.")
	flag.StringVar(&wwwAuth, "www-authenticate-uri", "http://127.0.0.1:5000/v3", "Keystone URI sent in WWW-Authenticate on a 401.")
	flag.StringVar(&project, "project", "admin", "The project of every caller with --auth=none, and the default project with --auth=kubernetes.")
	flag.StringVar(&nsMode, "namespace-mode", "single", "How a project maps to a namespace: single, template or label (namespaces labelled "+glance.LabelProjectID+").")
	flag.StringVar(&namespace, "namespace", "default", "The namespace of every task with --namespace-mode=single.")
	flag.StringVar(&nsTemplate, "namespace-template", "glance-{project}", "The namespace name with --namespace-mode=template.")
	flag.StringVar(&storeDir, "store-dir", "", "A directory holding the image store (mounted into the shim), from which GET /v2/images/{id}/file reads; empty: downloads are refused with 503.")
	flag.StringVar(&exportImage, "image-export-image", "", "The importer image: GET /v2/images/{id}/file reads an image through an export pod of this image, started in the image's namespace with its store mounted read-only (see internal/imageexport); ignored with --store-dir.")
	flag.DurationVar(&exportIdle, "image-export-idle-timeout", 10*time.Minute, "How long an export pod outlives its last download.")
	flag.StringVar(&conversionFormat, "image-conversion-output-format", "", "Glance's [image_conversion] output_format: web-download imports are converted to this disk format (raw, qcow2, ...) and the image's disk_format becomes it; empty (Glance's default, the plugin off) stores the data in the image's own disk_format.")
	flag.StringVar(&webDownloadFailure, "web-download-failure", "queued", "What a failed web-download import leaves its image in: queued (Glance's behaviour: clients that wait for active poll until they time out) or killed (fail fast: the image is killed and waiting clients stop at once).")
	flag.DurationVar(&limits.read, "read-timeout", limits.read, "How long a client may take to send a whole request, body included.")
	flag.DurationVar(&limits.write, "write-timeout", limits.write, "How long the shim may take to answer a request, from the end of its headers.")
	flag.DurationVar(&limits.idle, "idle-timeout", limits.idle, "How long a kept-alive connection may wait for its next request.")
	policy.BindFlags(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("glance-shim")

	compiled, err := urlpolicy.Compile(policy)
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: probeAddr,
	})
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if err := glance.AddIndexes(ctx, mgr.GetCache()); err != nil {
		return err
	}
	srv := &glance.Server{Cache: mgr.GetCache(), Writer: mgr.GetClient(), APIReader: mgr.GetAPIReader(), URLPolicy: compiled, Log: log}
	switch webDownloadFailure {
	case "queued":
		srv.WebDownloadFailure = tasksv1.ImageFailureQueued
	case "killed":
		srv.WebDownloadFailure = tasksv1.ImageFailureKilled
	default:
		return fmt.Errorf("--web-download-failure=%q: use queued or killed", webDownloadFailure)
	}
	switch conversionFormat {
	case "", "raw", "qcow2":
		srv.ConversionFormat = tasksv1.DiskFormat(conversionFormat)
	default:
		return fmt.Errorf("--image-conversion-output-format=%q: use raw, qcow2 or nothing", conversionFormat)
	}
	switch {
	case storeDir != "":
		srv.ImageData = glance.StoreDir(storeDir)
	case exportImage != "":
		if srv.ImageData, err = exportPods(mgr.GetConfig(), scheme, exportImage, exportIdle); err != nil {
			return err
		}
	}
	switch authMode {
	case "keystone-headers":
		srv.Auth = glance.NewKeystoneHeaders(glance.Policy(access), wwwAuth)
	case "kubernetes":
		srv.Auth = &glance.Kubernetes{Client: mgr.GetClient(), DefaultProject: project}
	case "none":
		log.Info("WARNING: --auth=none: every caller is an admin of project " + project + "; use it on a trusted machine only")
		srv.Auth = glance.NewNoAuth(project)
	default:
		return fmt.Errorf("--auth=%q: use keystone-headers, kubernetes or none", authMode)
	}
	switch nsMode {
	case "single":
		srv.Namespaces = glance.SingleNamespace(namespace)
	case "template":
		srv.Namespaces = glance.NamespaceTemplate(nsTemplate)
	case "label":
		srv.Namespaces = glance.LabelledNamespace{Reader: mgr.GetClient()}
	default:
		return fmt.Errorf("--namespace-mode=%q: use single, template or label", nsMode)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", func(r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("the task cache has not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	server := httpServer(bind, srv, limits)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		server.Shutdown(shutdown)
	}()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			log.Error(err, "The cache stopped")
			os.Exit(1)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return errors.New("the task cache did not sync")
	}
	log.Info("Serving the Glance v2 tasks API", "address", bind, "auth", authMode, "namespaceMode", nsMode)
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// timeouts bound how long a client may hold a connection: one that sends
// its request slowly, reads the answer slowly, or keeps the connection idle
// costs the shim a goroutine and a socket, and a hostile caller can open
// many.
type timeouts struct {
	readHeader, read, write, idle time.Duration
}

// defaultTimeouts leave room for a 1 MiB body on a slow link.
var defaultTimeouts = timeouts{readHeader: 10 * time.Second, read: time.Minute, write: time.Minute, idle: 2 * time.Minute}

// httpServer is the server of the Glance API.
func httpServer(addr string, h http.Handler, t timeouts) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h, MaxHeaderBytes: 64 << 10,
		ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read, WriteTimeout: t.write, IdleTimeout: t.idle,
	}
}

// exportPods reads images through export pods, with a token of this
// replica's own: no other reader of the pod network gets the images.
func exportPods(cfg *rest.Config, scheme *runtime.Scheme, image string, idle time.Duration) (*exportpods.Pods, error) {
	// Not the manager's cached client: the shim does not watch every pod.
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &exportpods.Pods{
		Client: c, Image: image, PullPolicy: corev1.PullIfNotPresent, Token: rand.Text(),
		IdleTimeout: idle, StartTimeout: 2 * time.Minute, Port: imageexport.Port,
		HTTP: &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second}},
	}, nil
}
