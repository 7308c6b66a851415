package exportpods

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/imageimport/image-import-operator/test/policies"
)

// shimClient installs the admission policies and the shim's ClusterRole
// and binding, named as config/shim's kustomization names them, and
// returns a client that acts as the shim's service account.
func shimClient(cfg *rest.Config, scheme *runtime.Scheme) (client.Client, error) {
	ctx := context.Background()
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	config := filepath.Join("..", "..", "config")
	if err := policies.Install(ctx, admin, filepath.Join(config, "policy")); err != nil {
		return nil, err
	}
	var kustomization struct {
		Namespace  string
		NamePrefix string `json:"namePrefix"`
	}
	if err := readYAML(filepath.Join(config, "shim", "kustomization.yaml"), &kustomization); err != nil {
		return nil, err
	}
	rbac, err := os.ReadFile(filepath.Join(config, "shim", "rbac.yaml"))
	if err != nil {
		return nil, err
	}
	docs := strings.Split(string(rbac), "\n---\n")
	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	if len(docs) != 2 {
		return nil, fmt.Errorf("config/shim/rbac.yaml: want a ClusterRole and its binding, have %d documents", len(docs))
	}
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &role); err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &binding); err != nil {
		return nil, err
	}
	role.Name = kustomization.NamePrefix + role.Name
	binding.Name = kustomization.NamePrefix + binding.Name
	binding.RoleRef.Name = role.Name
	account := &binding.Subjects[0]
	account.Namespace, account.Name = kustomization.Namespace, kustomization.NamePrefix+account.Name
	for _, obj := range []client.Object{&role, &binding} {
		if err := admin.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	var params corev1.ConfigMap
	if err := readYAML(filepath.Join(config, "shim", "export_pods.yaml"), &params); err != nil {
		return nil, err
	}
	params.Namespace, params.Name = kustomization.Namespace, kustomization.NamePrefix+params.Name
	params.Data["image"] = testImage
	system := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kustomization.Namespace}}
	for _, obj := range []client.Object{system, &params} {
		if err := admin.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	shim := rest.CopyConfig(cfg)
	shim.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + account.Namespace + ":" + account.Name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + account.Namespace, "system:authenticated"},
	}
	c, err := client.New(shim, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	// The authorizer sees the binding a moment after it is made.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := c.List(ctx, &corev1.PodList{})
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
	}
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, into)
}

// TestTheShimMakesExportPodsOnly: RBAC lets the shim create and delete
// any pod in any namespace; the export-pods admission policy keeps it to
// export pods of their shape. Each change below turns the shim's own
// export pod into one a stolen shim token would want.
func TestTheShimMakesExportPodsOnly(t *testing.T) {
	ctx := context.Background()
	ns, _, p, _ := newExport(t, time.Second)
	container := func(pod *corev1.Pod) *corev1.Container { return &pod.Spec.Containers[0] }
	refused := map[string]func(*corev1.Pod){
		"not an export pod": func(pod *corev1.Pod) { pod.Labels[labelName] = "shell" },
		"host network":      func(pod *corev1.Pod) { pod.Spec.HostNetwork = true },
		"host network, no port declared": func(pod *corev1.Pod) {
			pod.Spec.HostNetwork, container(pod).Ports = true, nil // no host port defaulted to catch it
		},
		"host PID": func(pod *corev1.Pod) { pod.Spec.HostPID = true },
		"host IPC": func(pod *corev1.Pod) { pod.Spec.HostIPC = true },
		"a node selected": func(pod *corev1.Pod) {
			pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "control-plane"}
		},
		"an affinity": func(pod *corev1.Pod) {
			pod.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{TopologyKey: "kubernetes.io/hostname",
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "database"}}}}}}
		},
		"a toleration of another taint": func(pod *corev1.Pod) {
			pod.Spec.Tolerations = []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane",
				Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
		},
		"a toleration of another effect": func(pod *corev1.Pod) {
			pod.Spec.Tolerations = []corev1.Toleration{{Key: "node.kubernetes.io/not-ready",
				Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
		},
		"a runtime class":  func(pod *corev1.Pod) { pod.Spec.RuntimeClassName = ptr.To("unconfined") },
		"system priority":  func(pod *corev1.Pod) { pod.Spec.PriorityClassName = "system-node-critical" },
		"another claim":    func(pod *corev1.Pod) { pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "database" },
		"another image":    func(pod *corev1.Pod) { container(pod).Image = "attacker/tools" },
		"another command":  func(pod *corev1.Pod) { container(pod).Command = []string{"/bin/sh", "-c"} },
		"another argument": func(pod *corev1.Pod) { container(pod).Args[0] = "remove" },
		"a sidecar": func(pod *corev1.Pod) {
			sidecar := *container(pod).DeepCopy()
			sidecar.Name, sidecar.Ports = "sidecar", nil
			pod.Spec.Containers = append(pod.Spec.Containers, sidecar)
		},
		"a container as root":          func(pod *corev1.Pod) { container(pod).SecurityContext.RunAsUser = ptr.To[int64](0) },
		"a container that may be root": func(pod *corev1.Pod) { container(pod).SecurityContext.RunAsNonRoot = ptr.To(false) },
		"pod-level resources": func(pod *corev1.Pod) {
			big := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi")}
			pod.Spec.Resources = &corev1.ResourceRequirements{Requests: big, Limits: big}
		},
		"the pod without AppArmor": func(pod *corev1.Pod) {
			pod.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		},
		"a container without AppArmor": func(pod *corev1.Pod) {
			container(pod).SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		},
		"another annotation":                       func(pod *corev1.Pod) { pod.Annotations["k8s.v1.cni.cncf.io/networks"] = "kube-system/host" },
		"no replica label":                         func(pod *corev1.Pod) { delete(pod.Labels, labelFor) },
		"an image that extends the configured one": func(pod *corev1.Pod) { container(pod).Image += "x" },
		"unconfined": func(pod *corev1.Pod) {
			container(pod).SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		},
		"an SELinux type": func(pod *corev1.Pod) {
			container(pod).SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"}
		},
		"a probe of another host": func(pod *corev1.Pod) { container(pod).ReadinessProbe.HTTPGet.Host = "169.254.169.254" },
		"a probe that runs a command": func(pod *corev1.Pod) {
			container(pod).LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh"}}}}
		},
		"a hook": func(pod *corev1.Pod) {
			container(pod).Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh"}}}}
		},
		"the pod unconfined": func(pod *corev1.Pod) {
			pod.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		},
		"the pod as root": func(pod *corev1.Pod) { pod.Spec.SecurityContext.RunAsUser = ptr.To[int64](0) },
		"the pod's SELinux level": func(pod *corev1.Pod) {
			pod.Spec.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Level: "s0:c1,c2"}
		},
		"a sysctl": func(pod *corev1.Pod) {
			pod.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}}
		},
		"an unmasked /proc": func(pod *corev1.Pod) {
			pod.Spec.HostUsers = ptr.To(false)
			container(pod).SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
		},
		"a gRPC probe": func(pod *corev1.Pod) {
			container(pod).ReadinessProbe.ProbeHandler = corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 8080}}
		},
		"a TCP probe of another host": func(pod *corev1.Pod) {
			container(pod).LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				TCPSocket: &corev1.TCPSocketAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		},
		"another label": func(pod *corev1.Pod) { pod.Labels["k8s-app"] = "kube-dns" },
		"an owner": func(pod *corev1.Pod) {
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
				Name: "coredns-5d78c9869d", UID: "6f1c1d42-7b0e-4bde-9a57-0c1e5e8f2a11", Controller: ptr.To(true)}}
		},
		"a finalizer":      func(pod *corev1.Pod) { pod.Finalizers = []string{"example.com/hold"} },
		"restarted always": func(pod *corev1.Pod) { pod.Spec.RestartPolicy = corev1.RestartPolicyAlways },
		"no deadline":      func(pod *corev1.Pod) { pod.Spec.ActiveDeadlineSeconds = nil },
		"a long grace":     func(pod *corev1.Pod) { pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1 << 20) },
		"a resource claim": func(pod *corev1.Pod) {
			pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: ptr.To("gpu")}}
		},
		"a scheduling gate": func(pod *corev1.Pod) { pod.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "hold"}} },
		"64 CPUs":           func(pod *corev1.Pod) { container(pod).Resources.Limits[corev1.ResourceCPU] = resource.MustParse("64") },
		"256Gi": func(pod *corev1.Pod) {
			container(pod).Resources.Limits[corev1.ResourceMemory] = resource.MustParse("256Gi")
		},
		"no limits": func(pod *corev1.Pod) { container(pod).Resources.Limits = nil },
		"GPUs": func(pod *corev1.Pod) {
			r := &container(pod).Resources
			r.Limits["nvidia.com/gpu"], r.Requests["nvidia.com/gpu"] = resource.MustParse("8"), resource.MustParse("8")
		},
		"disk asked for": func(pod *corev1.Pod) {
			container(pod).Resources.Requests[corev1.ResourceEphemeralStorage] = resource.MustParse("100Gi")
		},
		"a block device": func(pod *corev1.Pod) {
			c := container(pod)
			c.VolumeDevices, c.VolumeMounts = []corev1.VolumeDevice{{Name: "store", DevicePath: "/dev/store"}}, nil
		},
		"an environment": func(pod *corev1.Pod) { container(pod).Env = []corev1.EnvVar{{Name: "A", Value: "b"}} },
		"a node chosen":  func(pod *corev1.Pod) { pod.Spec.NodeName = "control-plane" },
		"a token":        func(pod *corev1.Pod) { pod.Spec.AutomountServiceAccountToken = nil },
		"root":           func(pod *corev1.Pod) { pod.Spec.SecurityContext.RunAsNonRoot = nil },
		"a host path": func(pod *corev1.Pod) {
			pod.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}
		},
		"a Secret": func(pod *corev1.Pod) {
			pod.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "keys"}}
		},
		"a claim written": func(pod *corev1.Pod) { pod.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = false },
		"a mount written": func(pod *corev1.Pod) { container(pod).VolumeMounts[0].ReadOnly = false },
		"escalation":      func(pod *corev1.Pod) { container(pod).SecurityContext.AllowPrivilegeEscalation = nil },
		"a capability": func(pod *corev1.Pod) {
			container(pod).SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		},
		"a Secret in the environment": func(pod *corev1.Pod) {
			container(pod).EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "keys"}}}}
		},
		"a host port": func(pod *corev1.Pod) { container(pod).Ports[0].HostPort = 80 },
		"an init container": func(pod *corev1.Pod) {
			pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "shell",
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
		},
	}
	unconfined := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "unconfined"}, Handler: "unconfined"}
	if err := k8sClient.Create(ctx, unconfined); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8sClient.Delete(context.Background(), unconfined) })
	for what, change := range refused {
		pod := p.desiredPod(ns.Name, "image-store")
		change(pod)
		err := createAsShimUntil(ctx, pod, true)
		policy := "export-pods"
		if what == "another image" || what == "another claim" || what == "an image that extends the configured one" {
			policy = "export-pod-image" // the ConfigMap's
		}
		if !refusedByPolicy(err, policy) {
			t.Errorf("%s: not refused by the %s policy: %v", what, policy, err)
		}
	}

	pinned := p.desiredPod(ns.Name, "image-store")
	pinned.Spec.Containers[0].Image += "@sha256:" + strings.Repeat("0", 64)
	if err := asShim.Create(ctx, pinned); err != nil {
		t.Errorf("an export pod whose image a policy engine pinned to its digest: %v", err)
	}
	pod := p.desiredPod(ns.Name, "image-store")
	if err := asShim.Create(ctx, pod); err != nil {
		t.Fatalf("the shim's own export pod: %v", err)
	}
	if err := asShim.Delete(ctx, pod); err != nil {
		t.Errorf("deleting its export pod: %v", err)
	}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "operator"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "manager"}}}}
	if err := k8sClient.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := asShim.Delete(ctx, other); !refusedByPolicy(err, "export-pods") {
		t.Errorf("the shim deleted a pod that is not an export pod (%v)", err)
	}
}

// refusedByPolicy says whether err is a refusal by the named policy of
// config/policy/export_pods.yaml, not by API validation or another one.
func refusedByPolicy(err error, policy string) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy+".tasks.imageimport.io'")
}

// createAsShimUntil creates pod as the shim until the API server refuses
// it (refused) or admits it (!refused), for up to 10 s: a policy, its
// ConfigMap and a binding take effect a moment after they change. It
// returns the last answer; a pod let through is deleted.
func createAsShimUntil(ctx context.Context, pod *corev1.Pod, refused bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		try := pod.DeepCopy()
		err := asShim.Create(ctx, try)
		if err == nil {
			if err := k8sClient.Delete(ctx, try); err != nil {
				return fmt.Errorf("deleting %s: %w", try.Name, err)
			}
		}
		if (err != nil) == refused || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWithoutItsConfigMapTheShimStartsNoExportPod: the image and claims
// are the ConfigMap's; without it no export pod starts (fail closed), and
// the cluster's other pods are not refused with it.
func TestWithoutItsConfigMapTheShimStartsNoExportPod(t *testing.T) {
	ctx := context.Background()
	ns, _, p, _ := newExport(t, time.Second)
	params := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: "image-import-system", Name: "image-import-export-pods"}
	if err := k8sClient.Get(ctx, key, params); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Delete(ctx, params); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		params.ResourceVersion, params.UID = "", ""
		if err := k8sClient.Create(ctx, params); err != nil {
			t.Fatal(err)
		}
		// Until the policy sees it again, for the tests after this one.
		if err := createAsShimUntil(ctx, p.desiredPod(ns.Name, "image-store"), false); err != nil {
			t.Fatalf("the export pod is still refused with the ConfigMap back: %v", err)
		}
	})

	err := createAsShimUntil(ctx, p.desiredPod(ns.Name, "image-store"), true)
	if err == nil || !strings.Contains(err.Error(), "export-pod-image.tasks.imageimport.io") {
		t.Errorf("an export pod without the ConfigMap: not refused by the policy: %v", err)
	}
	// Another app may be named image-export too; the replica label is ours.
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "app",
		Labels: map[string]string{labelName: name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := k8sClient.Create(ctx, other); err != nil {
		t.Errorf("another app's pod is refused without the shim's ConfigMap: %v", err)
	}
}
