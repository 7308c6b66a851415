// Package localrunner runs the Jobs of a cluster that has no kubelet
// (envtest) as processes on this machine. It plays the Job controller and
// the kubelet for the operator's own Jobs, so that tests drive real imports
// end to end: real clients, the real shim and reconciler against a real API
// server, the real importer and qemu-img.
//
// It runs a Job's container program with the Job's arguments, its volume
// mount paths rewritten to local directories: a PersistentVolumeClaim is
// a directory per namespace and claim (Dir), an emptyDir a fresh temporary
// one, a Secret its keys written to a temporary one. What the program
// writes to its termination message path becomes the pod's termination
// message; its exit code decides the pod's phase, and the Job's outcome
// follows the Job's backoffLimit and its fail-fast exit codes.
package localrunner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Runner runs the Jobs whose container image is Image.
type Runner struct {
	// Client talks to the API server directly (no cache).
	Client client.Client
	// Image is the container image whose Jobs run here.
	Image string
	// Program is the local binary that stands in for the image's entrypoint.
	Program string
	// Dir holds the claims: claim C of namespace N is Dir/N/C.
	Dir string
	// DropArgs are argument prefixes not passed on (what needs the pod's
	// own service account, say).
	DropArgs []string
	// Env is added to the program's environment.
	Env []string
	Log logr.Logger

	mu      sync.Mutex
	started map[types.UID]bool
}

// ClaimDir is where the claim's files live.
func (r *Runner) ClaimDir(namespace, claim string) string {
	return filepath.Join(r.Dir, namespace, claim)
}

// Start runs Jobs until ctx ends.
func (r *Runner) Start(ctx context.Context) {
	r.started = map[types.UID]bool{}
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				r.runNew(ctx)
			}
		}
	}()
}

func (r *Runner) runNew(ctx context.Context) {
	var jobs batchv1.JobList
	if err := r.Client.List(ctx, &jobs); err != nil {
		if ctx.Err() == nil {
			r.Log.Error(err, "listing Jobs")
		}
		return
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		c := job.Spec.Template.Spec.Containers
		if len(c) != 1 || c[0].Image != r.Image || finished(job) || job.DeletionTimestamp != nil {
			continue
		}
		r.mu.Lock()
		seen := r.started[job.UID]
		r.started[job.UID] = true
		r.mu.Unlock()
		if !seen {
			go r.run(ctx, job.DeepCopy())
		}
	}
}

func finished(job *batchv1.Job) bool {
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// run plays the Job controller for one Job: pods until one succeeds, one
// fails permanently, or the retries are used up.
func (r *Runner) run(ctx context.Context, job *batchv1.Job) {
	log := r.Log.WithValues("job", job.Namespace+"/"+job.Name)
	now := metav1.Now()
	if err := r.patchJob(ctx, job, func(s *batchv1.JobStatus) {
		s.StartTime, s.Active, s.Ready = &now, 1, ptr.To[int32](1)
	}); err != nil {
		log.Error(err, "starting Job")
		return
	}
	limit := ptr.Deref(job.Spec.BackoffLimit, 6)
	for failed := int32(0); ; {
		code, err := r.runPod(ctx, job, failed)
		if err != nil {
			if ctx.Err() == nil {
				log.Error(err, "running pod")
			}
			return
		}
		switch {
		case code == 0:
			r.endJob(ctx, log, job, batchv1.JobComplete, batchv1.JobReasonCompletionsReached, 0)
			return
		case failsFast(job, code):
			r.endJob(ctx, log, job, batchv1.JobFailed, batchv1.JobReasonPodFailurePolicy, failed+1)
			return
		case failed+1 > limit:
			r.endJob(ctx, log, job, batchv1.JobFailed, batchv1.JobReasonBackoffLimitExceeded, failed+1)
			return
		}
		failed++
	}
}

// failsFast reports whether the Job's podFailurePolicy fails it at once on code.
func failsFast(job *batchv1.Job, code int32) bool {
	if job.Spec.PodFailurePolicy == nil {
		return false
	}
	for _, rule := range job.Spec.PodFailurePolicy.Rules {
		on := rule.OnExitCodes
		if rule.Action == batchv1.PodFailurePolicyActionFailJob && on != nil &&
			on.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(on.Values, code) {
			return true
		}
	}
	return false
}

func (r *Runner) endJob(ctx context.Context, log logr.Logger, job *batchv1.Job, end batchv1.JobConditionType, reason string, failed int32) {
	now := metav1.Now()
	err := r.patchJob(ctx, job, func(s *batchv1.JobStatus) {
		s.Active, s.Ready, s.Failed = 0, ptr.To[int32](0), failed
		first := batchv1.JobFailureTarget
		if end == batchv1.JobComplete {
			s.CompletionTime, s.Succeeded, first = &now, 1, batchv1.JobSuccessCriteriaMet
		}
		s.Conditions = append(s.Conditions,
			batchv1.JobCondition{Type: first, Status: corev1.ConditionTrue, Reason: reason, LastTransitionTime: now},
			batchv1.JobCondition{Type: end, Status: corev1.ConditionTrue, Reason: reason, LastTransitionTime: now})
	})
	if err != nil && ctx.Err() == nil {
		log.Error(err, "ending Job")
	}
}

func (r *Runner) patchJob(ctx context.Context, job *batchv1.Job, mutate func(*batchv1.JobStatus)) error {
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(job), job); err != nil {
		return err
	}
	base := job.DeepCopy()
	mutate(&job.Status)
	return r.Client.Status().Patch(ctx, job, client.MergeFrom(base))
}

// runPod plays the kubelet for one pod of the Job and returns its exit code.
func (r *Runner) runPod(ctx context.Context, job *batchv1.Job, attempt int32) (int32, error) {
	pod, err := r.createPod(ctx, job, attempt)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "localrunner-pod-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	c := pod.Spec.Containers[0]
	args, terminationLog, err := r.localArgs(ctx, pod, dir)
	if err != nil {
		return 0, err
	}
	started := metav1.Now()
	if err := r.setPodState(ctx, pod, corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, r.Program, args...)
	cmd.Env = append(os.Environ(), r.Env...)
	out, runErr := cmd.CombinedOutput()
	code := int32(0)
	var exit *exec.ExitError
	switch {
	case errors.As(runErr, &exit):
		code = int32(exit.ExitCode())
	case runErr != nil:
		return 0, fmt.Errorf("running %s: %w", c.Name, runErr)
	}
	message, _ := os.ReadFile(terminationLog)
	if len(message) == 0 && code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		message = tail(out, 2048)
	}
	r.Log.V(1).Info("pod ended", "pod", pod.Name, "exit", code, "output", string(out))
	phase := map[bool]corev1.PodPhase{true: corev1.PodSucceeded, false: corev1.PodFailed}[code == 0]
	return code, r.setPodState(ctx, pod, phase, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0], Message: string(message),
		StartedAt: started, FinishedAt: metav1.Now(),
	}})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// createPod creates the pod as the Job controller does: the template's
// labels and the Job's, owned by the Job.
func (r *Runner) createPod(ctx context.Context, job *batchv1.Job, attempt int32) (*corev1.Pod, error) {
	labels := maps.Clone(job.Spec.Template.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[batchv1.ControllerUidLabel], labels[batchv1.JobNameLabel] = string(job.UID), job.Name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: job.Namespace, Name: job.Name + "-" + strconv.Itoa(int(attempt)), Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))},
		},
		Spec: job.Spec.Template.Spec,
	}
	pod.Spec.NodeName = "localrunner"
	if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return pod, r.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
}

func (r *Runner) setPodState(ctx context.Context, pod *corev1.Pod, phase corev1.PodPhase, state corev1.ContainerState) error {
	c := pod.Spec.Containers[0]
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, State: state, Ready: phase == corev1.PodRunning,
	}}}
	return r.Client.Status().Update(ctx, pod)
}

// localArgs is the container's command line with its mount paths and its
// termination message path rewritten to directories under dir.
func (r *Runner) localArgs(ctx context.Context, pod *corev1.Pod, dir string) ([]string, string, error) {
	c := pod.Spec.Containers[0]
	paths := map[string]string{}
	for _, m := range c.VolumeMounts {
		local, err := r.volumeDir(ctx, pod, m.Name, dir)
		if err != nil {
			return nil, "", err
		}
		paths[m.MountPath] = local
	}
	terminationLog := filepath.Join(dir, "termination-log")
	paths[cmpOr(c.TerminationMessagePath, corev1.TerminationMessagePathDefault)] = terminationLog
	var raw []string // the entrypoint is Program; the rest of Command, then Args
	if len(c.Command) > 1 {
		raw = append(raw, c.Command[1:]...)
	}
	var args []string
	for _, a := range append(raw, c.Args...) {
		if !slices.ContainsFunc(r.DropArgs, func(p string) bool { return strings.HasPrefix(a, p) }) {
			args = append(args, rewrite(a, paths))
		}
	}
	return args, terminationLog, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// rewrite replaces a mount path at the start of an argument or of its
// value (--flag=/mount/path/x) with the local directory.
func rewrite(arg string, paths map[string]string) string {
	prefix, value := "", arg
	if i := strings.IndexByte(arg, '='); strings.HasPrefix(arg, "-") && i > 0 {
		prefix, value = arg[:i+1], arg[i+1:]
	}
	// The longest mount path wins: /a/b before /a.
	keys := slices.SortedFunc(maps.Keys(paths), func(a, b string) int { return len(b) - len(a) })
	for _, mount := range keys {
		if value == mount || strings.HasPrefix(value, strings.TrimSuffix(mount, "/")+"/") {
			return prefix + paths[mount] + value[len(mount):]
		}
	}
	return arg
}

// volumeDir is the local directory of a pod volume.
func (r *Runner) volumeDir(ctx context.Context, pod *corev1.Pod, name, dir string) (string, error) {
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name })
	if i < 0 {
		return "", fmt.Errorf("pod %s mounts volume %s, which it does not have", pod.Name, name)
	}
	v := pod.Spec.Volumes[i]
	switch {
	case v.PersistentVolumeClaim != nil:
		d := r.ClaimDir(pod.Namespace, v.PersistentVolumeClaim.ClaimName)
		return d, os.MkdirAll(d, 0o755)
	case v.EmptyDir != nil:
		d := filepath.Join(dir, "volumes", name)
		return d, os.MkdirAll(d, 0o755)
	case v.Secret != nil:
		return r.secretDir(ctx, pod.Namespace, v.Secret, filepath.Join(dir, "volumes", name))
	}
	return "", fmt.Errorf("pod %s: volume %s is of a kind the local runner does not know", pod.Name, name)
}

func (r *Runner) secretDir(ctx context.Context, namespace string, src *corev1.SecretVolumeSource, d string) (string, error) {
	var s corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: src.SecretName}, &s); err != nil {
		return "", err
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	files := map[string]string{}
	for k := range s.Data {
		files[k] = k
	}
	if len(src.Items) > 0 {
		files = map[string]string{}
		for _, it := range src.Items {
			files[it.Key] = it.Path
		}
	}
	for key, path := range files {
		if err := os.WriteFile(filepath.Join(d, path), s.Data[key], 0o600); err != nil {
			return "", err
		}
	}
	return d, nil
}
