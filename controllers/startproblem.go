package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// problem is why a task's importer has not started: a condition reason
// (tasksv1.StartProblem) and a sentence for the task's message.
type problem struct {
	reason  string
	message string
}

// Waiting reasons of a container that the kubelet reports for an image it
// cannot pull, and for a container it cannot create.
var (
	imagePullReasons = []string{
		"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
		"ImageInspectError", "RegistryUnavailable", "SignatureValidationFailed",
	}
	containerCreateReasons = []string{
		"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreCreateHookError",
	}
)

// containerBlockedReasons are the reasons of the warnings about a pod whose
// container cannot be created yet: volumes that do not mount or attach,
// a sandbox or network that cannot be set up (the kubelet's and the
// attach/detach controller's event reasons; k8s.io/kubernetes is not
// importable).
var containerBlockedReasons = []string{
	"FailedMount", "FailedMapVolume", "FailedAttachVolume", "FailedMountOnFilesystemMismatch",
	"FailedCreatePodSandBox", "FailedCreatePodContainer", "FailedPodSandBoxStatus", "NetworkNotReady",
	"FailedPrepareDynamicResources",
	"Failed", // the kubelet's: the pod's data directories, the container's creation
}

// startProblem says why the importer of a Job that has not finished is not
// running, from what the cluster reports: the pods' status (scheduler,
// kubelet), the Job controller's FailedCreate events when it has no pod,
// and the warnings about a pod stuck creating its container (the kubelet
// reports failed mounts and sandboxes only as events). It is nil while the
// importer starts normally or runs. It is pure.
func startProblem(pods []corev1.Pod, failedCreates, podWarnings []corev1.Event) *problem {
	pod := pendingPod(pods)
	if pod == nil {
		if slices.ContainsFunc(pods, running) {
			return nil
		}
		return failedCreateProblem(pods, failedCreates)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		w := cs.State.Waiting
		switch {
		case w == nil:
		case slices.Contains(imagePullReasons, w.Reason):
			where := ""
			if pod.Spec.NodeName != "" {
				where = " on node " + pod.Spec.NodeName
			}
			return &problem{tasksv1.ReasonImagePullFailed, fmt.Sprintf(
				"The importer image cannot be pulled%s: %s", where, joinReason(w.Reason, w.Message))}
		case slices.Contains(containerCreateReasons, w.Reason):
			return &problem{tasksv1.ReasonContainerCreateFailed, fmt.Sprintf(
				"The importer container cannot be created: %s", joinReason(w.Reason, w.Message))}
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return &problem{tasksv1.ReasonUnschedulable, "The importer pod cannot be scheduled: " + c.Message}
		}
	}
	if creating(pod) {
		// Only the warnings of what keeps a container from being created:
		// the kubelet also warns of what it works around (MissingClusterDNS,
		// DNSConfigForming), and the scheduler's warnings tell why the pod
		// waited for the node it now has.
		podWarnings = slices.DeleteFunc(slices.Clone(podWarnings), func(e corev1.Event) bool {
			return !slices.Contains(containerBlockedReasons, e.Reason)
		})
		if e := latest(podWarnings); e != nil {
			return &problem{tasksv1.ReasonContainerCreateFailed, fmt.Sprintf(
				"The importer container cannot be created: %s", joinReason(e.Reason, e.Message))}
		}
	}
	return nil
}

// failedCreateProblem explains a Job that has no pod to run: the API server
// refused the pods the Job controller created. Events older than the newest
// pod are from before it and explain nothing.
func failedCreateProblem(pods []corev1.Pod, failedCreates []corev1.Event) *problem {
	var newestPod time.Time
	for i := range pods {
		newestPod = laterOf(newestPod, pods[i].CreationTimestamp.Time)
	}
	e := latest(failedCreates)
	if e == nil || !eventTime(e).After(newestPod) {
		return nil
	}
	msg := strings.TrimPrefix(e.Message, "Error creating: ")
	if strings.Contains(msg, "exceeded quota") {
		return &problem{tasksv1.ReasonQuotaExceeded, "A ResourceQuota refuses the importer pod: " + msg}
	}
	return &problem{tasksv1.ReasonPodCreateFailed, "The importer pod cannot be created: " + msg}
}

// pendingPod is the newest pod that has not started its container yet.
func pendingPod(pods []corev1.Pod) *corev1.Pod {
	var newest *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodPending || p.DeletionTimestamp != nil {
			continue
		}
		if newest == nil || p.CreationTimestamp.After(newest.CreationTimestamp.Time) {
			newest = p
		}
	}
	return newest
}

func running(p corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil
}

// creating reports whether a pod is on its node and its importer container
// is still being created (volumes mounted, sandbox started, image present).
func creating(pod *corev1.Pod) bool {
	if pod.Spec.NodeName == "" {
		scheduled := false
		for _, c := range pod.Status.Conditions {
			scheduled = scheduled || (c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue)
		}
		if !scheduled {
			return false
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == importerContainer && (cs.State.Waiting == nil ||
			!slices.Contains([]string{"ContainerCreating", "PodInitializing"}, cs.State.Waiting.Reason)) {
			return false
		}
	}
	return true
}

// latest is the most recent of events; nil when there is none.
func latest(events []corev1.Event) *corev1.Event {
	var last *corev1.Event
	for i := range events {
		if last == nil || eventTime(&events[i]).After(eventTime(last)) {
			last = &events[i]
		}
	}
	return last
}

// eventTime is when an event last happened, in the fields that core/v1
// and events.k8s.io/v1 recorders fill.
func eventTime(e *corev1.Event) time.Time {
	t := laterOf(e.LastTimestamp.Time, e.EventTime.Time)
	t = laterOf(t, e.FirstTimestamp.Time)
	if e.Series != nil {
		t = laterOf(t, e.Series.LastObservedTime.Time)
	}
	return laterOf(t, e.CreationTimestamp.Time)
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func joinReason(reason, message string) string {
	if message == "" {
		return reason
	}
	return reason + ": " + message
}
