// Package exportpods is the Glance shim's side of image downloads: it
// starts export pods (package imageexport) in an image's namespace, with
// the store's claim mounted read-only, and reads images through them.
package exportpods

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/imageimport/image-import-operator/internal/imageexport"
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
	// Port is where export pods listen (imageexport.Port unless a test says otherwise).
	Port int
	// HTTP reads from export pods.
	HTTP *http.Client

	mu      sync.Mutex
	locks   map[string]*sync.Mutex // by namespace/claim
	created map[string]createdPod  // the pod this replica created, by namespace/claim
}

// createdPod is an export pod this replica created.
type createdPod struct {
	name string
	uid  types.UID
}

// request asks the export pod of the claim for image id, with a Range
// header unless empty. The caller closes the response's body.
func (p *Pods) request(ctx context.Context, namespace, claim, id string, rangeHeader string) (*http.Response, error) {
	if !imageexport.ValidID(id) {
		return nil, fmt.Errorf("%q cannot name an image file", id)
	}
	pod, err := p.readyPod(ctx, namespace, claim)
	if err != nil {
		return nil, err
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(p.Port)) + imageexport.ImagesPath + id
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.claimToken(namespace, claim))
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading image %s from export pod %s/%s: %w", id, namespace, pod.Name, err)
	}
	return resp, nil
}

// readyPod returns this replica's ready export pod of the claim, starting
// one when there is none. One caller at a time per claim starts or waits
// for it, so concurrent downloads share one pod.
func (p *Pods) readyPod(ctx context.Context, namespace, claim string) (*corev1.Pod, error) {
	key := namespace + "/" + claim
	unlock := p.lock(key)
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, p.StartTimeout)
	defer cancel()
	for {
		pod, err := p.currentPod(ctx, key)
		if err != nil {
			return nil, err
		}
		if pod == nil {
			if pod, err = p.create(ctx, key, namespace, claim); err != nil {
				return nil, err
			}
		}
		if ready(pod) {
			return pod, nil
		}
		select {
		case <-ctx.Done():
			// Never ready (unschedulable, a claim attached elsewhere, a
			// quota): delete it, so that the next download tries afresh.
			p.forget(context.Background(), key, pod)
			return nil, fmt.Errorf("export pod %s/%s for claim %s is not ready after %s (phase %s)",
				namespace, pod.Name, claim, p.StartTimeout, pod.Status.Phase)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lock serialises the callers of one claim.
func (p *Pods) lock(key string) func() {
	p.mu.Lock()
	if p.locks == nil {
		p.locks, p.created = map[string]*sync.Mutex{}, map[string]createdPod{}
	}
	l := p.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		p.locks[key] = l
	}
	p.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// currentPod is the live export pod this replica created for the claim,
// if any. Only a pod this replica created gets the token: anyone who may
// create pods in the namespace can copy an export pod's labels.
func (p *Pods) currentPod(ctx context.Context, key string) (*corev1.Pod, error) {
	p.mu.Lock()
	mine, ok := p.created[key]
	p.mu.Unlock()
	if !ok {
		return nil, nil
	}
	namespace, _, _ := strings.Cut(key, "/")
	pod := &corev1.Pod{}
	err := p.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: mine.name}, pod)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && pod.UID != mine.uid):
		p.forget(ctx, key, nil)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading export pod %s/%s: %w", namespace, mine.name, err)
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		// Exited once idle: make room for the next one.
		p.forget(ctx, key, pod)
		return nil, nil
	}
	return pod, nil
}

// forget deletes the claim's pod, if given, and forgets it.
func (p *Pods) forget(ctx context.Context, key string, pod *corev1.Pod) {
	if pod != nil && pod.DeletionTimestamp == nil {
		p.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}) // gone already is fine
	}
	p.mu.Lock()
	delete(p.created, key)
	p.mu.Unlock()
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

func (p *Pods) create(ctx context.Context, key, namespace, claim string) (*corev1.Pod, error) {
	pod := p.desiredPod(namespace, claim)
	if err := p.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating an export pod for claim %s in %s: %w", claim, namespace, err)
	}
	p.mu.Lock()
	p.created[key] = createdPod{name: pod.Name, uid: pod.UID}
	p.mu.Unlock()
	return pod, nil
}

// claimToken is the token of the claim's export pods: a leaked one opens
// that claim's pods only, not every export pod of the replica.
func (p *Pods) claimToken(namespace, claim string) string {
	mac := hmac.New(sha256.New, []byte(p.Token))
	mac.Write([]byte(namespace + "/" + claim))
	return hex.EncodeToString(mac.Sum(nil))
}

// desiredPod is an export pod for the claim: the store mounted read-only,
// restricted Pod Security, no service account token.
func (p *Pods) desiredPod(namespace, claim string) *corev1.Pod {
	sum := sha256.Sum256([]byte(p.claimToken(namespace, claim)))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: namespace, Labels: p.labels(claim),
			// No service mesh's sidecar: the export-pods admission policy
			// refuses the containers, environment and capabilities one adds.
			Annotations: map[string]string{"sidecar.istio.io/inject": "false", "linkerd.io/inject": "disabled"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// A backstop: the pod exits once idle, and the shim deletes one
			// that ended or never became ready.
			ActiveDeadlineSeconds:        ptr.To[int64](24 * 3600),
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
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: imageexport.HealthPath, Port: intstr.FromInt32(int32(p.Port))}},
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
