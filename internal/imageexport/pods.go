package imageexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels of export pods.
const (
	labelName  = "app.kubernetes.io/name"
	labelClaim = "tasks.imageimport.io/export-claim"
	labelFor   = "tasks.imageimport.io/export-for"
	name       = "image-export"
	uid        = 65532 // the importer image's user
	mountPath  = "/var/lib/image-store"
)

// Pods starts export pods and reads images through them. Each shim
// replica has its own token, and so its own export pods.
type Pods struct {
	// Client creates, reads and deletes pods (not through a cache: the
	// shim does not watch every pod of the cluster).
	Client client.Client
	// Image is the importer image, which has the export command.
	Image      string
	PullPolicy corev1.PullPolicy
	// Token is this replica's secret bearer token.
	Token string
	// IdleTimeout is how long an export pod outlives its last request.
	IdleTimeout time.Duration
	// StartTimeout bounds the wait for a new export pod to be ready.
	StartTimeout time.Duration
	// Port is where export pods listen (Port unless a test says otherwise).
	Port int
	// HTTP reads from export pods.
	HTTP *http.Client
}

// request asks the export pod of the claim for image id, with a Range
// header unless empty. The caller closes the response's body.
func (p *Pods) request(ctx context.Context, namespace, claim, id string, rangeHeader string) (*http.Response, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q cannot name an image file", id)
	}
	pod, err := p.readyPod(ctx, namespace, claim)
	if err != nil {
		return nil, err
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(p.Port)) + imagesPath + id
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading image %s from export pod %s/%s: %w", id, namespace, pod.Name, err)
	}
	return resp, nil
}

// readyPod returns a ready export pod of the claim, starting one when
// there is none.
func (p *Pods) readyPod(ctx context.Context, namespace, claim string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, p.StartTimeout)
	defer cancel()
	for {
		pod, err := p.currentPod(ctx, namespace, claim)
		if err != nil {
			return nil, err
		}
		if pod == nil {
			if pod, err = p.create(ctx, namespace, claim); err != nil {
				return nil, err
			}
		}
		if ready(pod) {
			return pod, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("export pod %s/%s for claim %s is not ready after %s (phase %s)",
				namespace, pod.Name, claim, p.StartTimeout, pod.Status.Phase)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// currentPod is this replica's live export pod of the claim, if any;
// ended ones are deleted.
func (p *Pods) currentPod(ctx context.Context, namespace, claim string) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := p.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels(p.labels(claim))); err != nil {
		return nil, fmt.Errorf("listing export pods in %s: %w", namespace, err)
	}
	var live *corev1.Pod
	for i := range pods.Items {
		pod := &pods.Items[i]
		switch {
		case pod.DeletionTimestamp != nil:
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			// Exited once idle: make room for the next one.
			if err := p.Client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
				return nil, err
			}
		case live == nil || ready(pod):
			live = pod
		}
	}
	return live, nil
}

func ready(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (p *Pods) labels(claim string) map[string]string {
	sum := sha256.Sum256([]byte(p.Token))
	return map[string]string{
		labelName:  name,
		labelClaim: claim,
		// Which replica: a hash of its token, never the token.
		labelFor: hex.EncodeToString(sum[:8]),
	}
}

func (p *Pods) create(ctx context.Context, namespace, claim string) (*corev1.Pod, error) {
	pod := p.desiredPod(namespace, claim)
	if err := p.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating an export pod for claim %s in %s: %w", claim, namespace, err)
	}
	return pod, nil
}

// desiredPod is an export pod for the claim: the store mounted read-only,
// restricted Pod Security, no service account token.
func (p *Pods) desiredPod(namespace, claim string) *corev1.Pod {
	sum := sha256.Sum256([]byte(p.Token))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: namespace, Labels: p.labels(claim)},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](uid), RunAsGroup: ptr.To[int64](uid),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "export", Image: p.Image, ImagePullPolicy: p.PullPolicy,
				Args: []string{
					"export", "--dir=" + mountPath, "--listen=:" + strconv.Itoa(p.Port),
					"--token-sha256=" + hex.EncodeToString(sum[:]), "--idle-timeout=" + p.IdleTimeout.String(),
				},
				Ports:        []corev1.ContainerPort{{Name: "export", ContainerPort: int32(p.Port)}},
				VolumeMounts: []corev1.VolumeMount{{Name: "store", MountPath: mountPath, ReadOnly: true}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: healthPath, Port: intstr.FromInt32(int32(p.Port))}},
					PeriodSeconds: 1,
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Volumes: []corev1.Volume{{Name: "store", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: true},
			}}},
		},
	}
}
