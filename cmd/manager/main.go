// Command manager runs the ImageImportTask and Image controllers.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/controllers"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var (
		metricsAddr, probeAddr     string
		metricsSecure, leaderElect bool
		importer                   controllers.ImporterConfig
		pullPolicy                 string
		cpuRequest, cpuLimit       string
		memoryRequest, memoryLimit string
		scratchSize                string
		importerArgs               stringList
		taskTTL                    time.Duration
		storeClaimTimeout          time.Duration
		maxConcurrentReconciles    int
		maxImageSize               string
		maxVirtualSize             string
		minTransferRate            string
		defaultDestination         string
		volumeSize, storeSize      string
		nodeSelector               string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", false, "Serve metrics over HTTPS, to callers that Kubernetes authenticates and authorizes.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the health and readiness probes.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas reconciles.")
	flag.StringVar(&importer.Image, "importer-image", "localhost/imageimport/importer:dev", "Image of the importer that import Jobs run.")
	flag.StringVar(&pullPolicy, "importer-pull-policy", string(corev1.PullIfNotPresent), "Pull policy of the importer image: Always, IfNotPresent or Never.")
	flag.StringVar(&importer.StoreClaimName, "store-claim", "image-store", "PersistentVolumeClaim, in each task's namespace, that holds the image store.")
	// An import mostly waits on the network and the disk: a small request
	// lets a node run many at once, and the limit lets a conversion use
	// the cores that are free. With 250m, 2-core nodes queued the eighth
	// concurrent import for CPU (bench/throughput).
	flag.StringVar(&cpuRequest, "importer-cpu-request", "100m", "CPU request of an importer pod.")
	flag.StringVar(&cpuLimit, "importer-cpu-limit", "2", "CPU limit of an importer pod.")
	flag.StringVar(&memoryRequest, "importer-memory-request", "128Mi", "Memory request of an importer pod.")
	flag.StringVar(&memoryLimit, "importer-memory-limit", "1Gi", "Memory limit of an importer pod, qemu-img included.")
	flag.StringVar(&scratchSize, "importer-scratch-size", "50Gi", "Size limit of an importer pod's scratch space for conversions.")
	flag.Var(&importerArgs, "importer-arg", "An argument added to every importer's command line, such as --allowed-hosts=mirror.example.com (repeatable).")
	flag.DurationVar(&taskTTL, "task-ttl", controllers.DefaultTaskTTL, "Time from a task's completion to its expiresAt.")
	flag.DurationVar(&storeClaimTimeout, "store-claim-timeout", controllers.DefaultStoreClaimTimeout,
		"How long a task waits, from its creation, for the store claim to exist in its namespace before it fails (reason StoreClaimMissing).")
	flag.IntVar(&maxConcurrentReconciles, "max-concurrent-reconciles", 4, "Tasks reconciled at once.")
	flag.StringVar(&maxImageSize, "max-image-size", "64Gi", "Largest download an import may make; 0 for no limit.")
	flag.StringVar(&maxVirtualSize, "max-virtual-size", "4Ti", "Largest virtual disk an image may have; it also bounds what qemu-img may write.")
	flag.StringVar(&minTransferRate, "min-transfer-rate", "1Ki", "Slowest source an import accepts, in bytes per second averaged over a minute; 0 for none.")
	flag.StringVar(&importer.Limits.Sandbox, "importer-sandbox", "auto",
		"How qemu-img is confined. auto: Landlock where the node's kernel has it; elsewhere vmdk and vhdx sources are refused. required: no import on a node without Landlock.")
	flag.StringVar(&defaultDestination, "default-destination", string(tasksv1.DestinationStore),
		"Where a task without spec.destination stores its image: Store (the namespace's store claim) or Volume (a claim of its own).")
	flag.StringVar(&importer.Destination.VolumeStorageClass, "volume-storage-class", "", "StorageClass of an image's volume whose task names none; the cluster's default when empty.")
	flag.StringVar(&volumeSize, "volume-size", controllers.DefaultVolumeSize.String(), "Size of an image's volume whose task names none (more when the image's minDisk needs it).")
	flag.StringVar(&importer.Destination.StoreStorageClass, "store-storage-class", "",
		"StorageClass of the store claim the operator creates in a namespace that has none; when empty, the cluster's default, and without one tasks fail (StoreClaimMissing).")
	flag.StringVar(&storeSize, "store-size", controllers.DefaultStoreSize.String(), "Size of the store claim the operator creates.")
	flag.StringVar(&nodeSelector, "importer-node-selector", "", "Default nodeSelector of importer pods, as key=value,key=value; a task's spec.importerPod.nodeSelector wins per key.")
	flag.StringVar(&importer.Placement.PriorityClassName, "importer-priority-class-name", "", "Default priorityClassName of importer pods.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	resources, err := importerResources(cpuRequest, cpuLimit, memoryRequest, memoryLimit)
	if err == nil {
		importer.ScratchSize, err = resource.ParseQuantity(scratchSize)
	}
	for _, l := range []struct {
		flag, value string
		into        *int64
	}{
		{"--max-image-size", maxImageSize, &importer.Limits.MaxImageSize},
		{"--max-virtual-size", maxVirtualSize, &importer.Limits.MaxVirtualSize},
		{"--min-transfer-rate", minTransferRate, &importer.Limits.MinTransferRate},
	} {
		if q, perr := resource.ParseQuantity(l.value); perr != nil || q.Sign() < 0 {
			err = errors.Join(err, fmt.Errorf("%s=%q is not a size", l.flag, l.value))
		} else {
			*l.into = q.Value()
		}
	}
	if derr := destinationFlags(&importer, defaultDestination, volumeSize, storeSize, nodeSelector); derr != nil {
		err = errors.Join(err, derr)
	}
	if s := importer.Limits.Sandbox; s != "auto" && s != "required" {
		err = errors.Join(err, fmt.Errorf("--importer-sandbox=%q is neither auto nor required", s))
	}
	if err != nil {
		log.Error(err, "Invalid importer flags")
		os.Exit(2)
	}
	importer.Resources = resources
	importer.PullPolicy = corev1.PullPolicy(pullPolicy)
	importer.Args = importerArgs

	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: metricsSecure}
	if metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "image-import-operator.tasks.imageimport.io",
		// The lease goes as the manager stops (the program ends with it):
		// on a rollout the new manager leads at once, instead of after the
		// lease expires, with no task reconciled meanwhile (28 s in
		// bench/throughput right after make run).
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	reconciler := &controllers.ImageImportTaskReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Scheme:                  mgr.GetScheme(),
		Recorder:                mgr.GetEventRecorder("image-import-operator"),
		Clock:                   clock.RealClock{},
		Metrics:                 controllers.NewMetrics(metrics.Registry, mgr.GetClient()),
		Importer:                importer,
		TaskTTL:                 taskTTL,
		StoreClaimTimeout:       storeClaimTimeout,
		MaxConcurrentReconciles: maxConcurrentReconciles,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to set up the ImageImportTask controller")
		os.Exit(1)
	}
	images := &controllers.ImageReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: reconciler.Recorder, Clock: clock.RealClock{}, Metrics: reconciler.Metrics,
		Importer: importer, MaxConcurrentReconciles: maxConcurrentReconciles,
	}
	if err := images.SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to set up the Image controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up the readiness check")
		os.Exit(1)
	}
	log.Info("Starting the manager", "importerImage", importer.Image, "storeClaim", importer.StoreClaimName, "taskTTL", taskTTL, "storeClaimTimeout", storeClaimTimeout)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped")
		os.Exit(1)
	}
}

// importerResources parses the importer's resource flags.
func importerResources(cpuRequest, cpuLimit, memoryRequest, memoryLimit string) (corev1.ResourceRequirements, error) {
	flags := map[string]string{
		"importer-cpu-request": cpuRequest, "importer-cpu-limit": cpuLimit,
		"importer-memory-request": memoryRequest, "importer-memory-limit": memoryLimit,
	}
	q := map[string]resource.Quantity{}
	for name, value := range flags {
		v, err := resource.ParseQuantity(value)
		if err != nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("--%s=%q: %w", name, value, err)
		}
		q[name] = v
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: q["importer-cpu-request"], corev1.ResourceMemory: q["importer-memory-request"]},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: q["importer-cpu-limit"], corev1.ResourceMemory: q["importer-memory-limit"]},
	}, nil
}

// destinationFlags parses the flags of where images land and where
// importer pods run.
func destinationFlags(cfg *controllers.ImporterConfig, destination, volumeSize, storeSize, nodeSelector string) error {
	var err error
	switch d := tasksv1.DestinationType(destination); d {
	case tasksv1.DestinationStore, tasksv1.DestinationVolume:
		cfg.Destination.Type = d
	default:
		err = fmt.Errorf("--default-destination=%q is neither Store nor Volume", destination)
	}
	for _, q := range []struct {
		flag, value string
		into        *resource.Quantity
	}{{"--volume-size", volumeSize, &cfg.Destination.VolumeSize}, {"--store-size", storeSize, &cfg.Destination.StoreSize}} {
		v, perr := resource.ParseQuantity(q.value)
		if perr != nil || v.Sign() <= 0 {
			err = errors.Join(err, fmt.Errorf("%s=%q is not a size", q.flag, q.value))
			continue
		}
		*q.into = v
	}
	if nodeSelector != "" {
		sel, perr := labels.ConvertSelectorToLabelsMap(nodeSelector)
		if perr != nil {
			err = errors.Join(err, fmt.Errorf("--importer-node-selector=%q: %w", nodeSelector, perr))
		}
		cfg.Placement.NodeSelector = sel
	}
	return err
}
