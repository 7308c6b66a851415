package controllers

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

const wait = 15 * time.Second

func sampleTask(ns, name string) *tasksv1.ImageImportTask {
	return &tasksv1.ImageImportTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: tasksv1.ImageImportTaskSpec{
			Type: tasksv1.TaskTypeImport,
			Input: tasksv1.TaskInput{
				ImportFrom:       "https://images.test/cirros.qcow2",
				ImportFromFormat: "qcow2",
				ImageProperties:  &tasksv1.ImageProperties{DiskFormat: "raw", ContainerFormat: "bare"},
			},
		},
	}
}

// createTask creates a task and returns it as the API server stored it.
func createTask(t *testing.T, task *tasksv1.ImageImportTask) *tasksv1.ImageImportTask {
	t.Helper()
	if err := k8sClient.Create(context.Background(), task); err != nil {
		t.Fatalf("creating task: %v", err)
	}
	return task
}

// waitForJob waits for the task's Job and returns it.
func waitForJob(t *testing.T, task *tasksv1.ImageImportTask) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	key := client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}
	NewWithT(t).Eventually(func() error {
		return k8sClient.Get(context.Background(), key, job)
	}, wait).Should(Succeed(), "the task's Job was never created")
	return job
}

// waitForStatus waits until the task has the Glance status and returns it.
func waitForStatus(t *testing.T, task *tasksv1.ImageImportTask, status tasksv1.TaskStatus) *tasksv1.ImageImportTask {
	t.Helper()
	got := &tasksv1.ImageImportTask{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(Succeed())
		g.Expect(got.Status.Status).To(Equal(status), "message: %q", got.Status.Message)
	}, wait).Should(Succeed())
	return got
}

// jobsOf lists the Jobs labelled with the task's UID.
func jobsOf(t *testing.T, task *tasksv1.ImageImportTask) []batchv1.Job {
	t.Helper()
	var jobs batchv1.JobList
	err := k8sClient.List(context.Background(), &jobs, client.InNamespace(task.Namespace),
		client.MatchingLabels{tasksv1.LabelTaskUID: string(task.UID)})
	if err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

// patchJobStatus plays the Job controller.
func patchJobStatus(t *testing.T, job *batchv1.Job, mutate func(*batchv1.JobStatus)) {
	t.Helper()
	ctx := context.Background()
	NewWithT(t).Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
	base := job.DeepCopy()
	mutate(&job.Status)
	NewWithT(t).Expect(k8sClient.Status().Patch(ctx, job, client.MergeFrom(base))).To(Succeed())
}

func startJob(t *testing.T, job *batchv1.Job) {
	now := metav1.Now()
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		s.StartTime, s.Active, s.Ready = &now, 1, ptr.To[int32](1)
	})
}

// completeJob marks the Job Complete, as the Job controller does since 1.31.
func completeJob(t *testing.T, job *batchv1.Job) {
	now := metav1.Now()
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		if s.StartTime == nil {
			s.StartTime = &now
		}
		s.CompletionTime, s.Active, s.Ready, s.Succeeded = &now, 0, ptr.To[int32](0), 1
		s.Conditions = append(s.Conditions,
			batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonCompletionsReached, LastTransitionTime: now},
			batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonCompletionsReached, LastTransitionTime: now})
	})
}

// setTaskStatus edits a task's status as another writer would.
func setTaskStatus(t *testing.T, task *tasksv1.ImageImportTask, edit func(*tasksv1.ImageImportTaskStatus)) {
	t.Helper()
	base := task.DeepCopy()
	edit(&task.Status)
	NewWithT(t).Expect(k8sClient.Status().Patch(context.Background(), task, client.MergeFrom(base))).To(Succeed())
}

// failJob marks the Job Failed for reason after failedPods failed pods.
func failJob(t *testing.T, job *batchv1.Job, reason string, failedPods int32) {
	now := metav1.Now()
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		if s.StartTime == nil {
			s.StartTime = &now
		}
		s.Active, s.Ready, s.Failed = 0, ptr.To[int32](0), failedPods
		s.Conditions = append(s.Conditions,
			batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: reason, LastTransitionTime: now},
			batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, LastTransitionTime: now})
	})
}

// finishPod plays the importer: a pod of the Job that exited with code and
// left message as its termination message.
func finishPod(t *testing.T, job *batchv1.Job, name string, code int32, message string, finished time.Time) {
	t.Helper()
	ctx := context.Background()
	g := NewWithT(t)
	pod := createPod(t, job, name)
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	pod.Status = corev1.PodStatus{
		Phase: phase,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: importerContainer, Image: job.Spec.Template.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0], Message: message,
				StartedAt: metav1.NewTime(finished.Add(-time.Second)), FinishedAt: metav1.NewTime(finished),
			}},
		}},
	}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
}

func resultJSON(t *testing.T, r importresult.Result) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// createPod plays the Job controller: a pod of the Job, as it creates them
// (the template's labels and the Job's), not started yet.
func createPod(t *testing.T, job *batchv1.Job, name string) *corev1.Pod {
	t.Helper()
	labels := maps.Clone(job.Spec.Template.Labels)
	labels[batchv1.ControllerUidLabel], labels[batchv1.JobNameLabel] = string(job.UID), job.Name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: job.Namespace, Name: name, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))},
		},
		Spec: job.Spec.Template.Spec,
	}
	NewWithT(t).Expect(k8sClient.Create(context.Background(), pod)).To(Succeed())
	return pod
}

// setPodStatus plays the scheduler and the kubelet.
func setPodStatus(t *testing.T, pod *corev1.Pod, status corev1.PodStatus) {
	t.Helper()
	ctx := context.Background()
	g := NewWithT(t)
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
	pod.Status = status
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
}

// warnAbout plays a Kubernetes component that records a Warning event
// about obj, as client-go's core/v1 recorder does.
func warnAbout(t *testing.T, obj client.Object, kind, component, reason, message string) {
	t.Helper()
	now := metav1.Now()
	gvk, err := k8sClient.GroupVersionKindFor(obj)
	if err != nil {
		t.Fatal(err)
	}
	e := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: obj.GetNamespace(), GenerateName: obj.GetName() + "."},
		InvolvedObject: corev1.ObjectReference{
			Kind: kind, APIVersion: gvk.GroupVersion().String(),
			Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(),
		},
		Reason: reason, Message: message, Type: corev1.EventTypeWarning, Count: 1,
		Source:         corev1.EventSource{Component: component},
		FirstTimestamp: now, LastTimestamp: now,
	}
	if err := k8sClient.Create(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// taskEvent is an event about a task.
type taskEvent struct{ Type, Reason, Note string }

// eventsOf lists the events about the task.
func eventsOf(t *testing.T, task *tasksv1.ImageImportTask) []taskEvent {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(task.Namespace)); err != nil {
		t.Fatal(err)
	}
	var events []taskEvent
	for _, e := range list.Items {
		if e.Regarding.UID == task.UID {
			events = append(events, taskEvent{e.Type, e.Reason, e.Note})
		}
	}
	return events
}

// eventReasons lists the reasons of the events about the task.
func eventReasons(t *testing.T, task *tasksv1.ImageImportTask) []string {
	t.Helper()
	var reasons []string
	for _, e := range eventsOf(t, task) {
		reasons = append(reasons, e.Reason)
	}
	return reasons
}

// failureMetrics are the metrics a task's failure moves.
type failureMetrics struct{ failures, durations float64 }

func failureMetricsFor(reason string) failureMetrics {
	return failureMetrics{
		failures:  gathered("imageimport_task_failures_total", map[string]string{"reason": reason}),
		durations: gathered("imageimport_task_duration_seconds", map[string]string{"status": "failure"}),
	}
}

// expectFailureRecorded checks what a failed task leaves besides its
// status: a Warning event with the reason, and metrics: one more failure
// with metricReason (the importer's reason when it gave one, the
// condition's otherwise), and one more duration of a failed task.
func expectFailureRecorded(t *testing.T, task *tasksv1.ImageImportTask, reason, metricReason string, before failureMetrics) {
	t.Helper()
	// The reconcile that wrote the failure updates the metrics once the
	// write succeeded: just after.
	NewWithT(t).Eventually(func(g Gomega) {
		after := failureMetricsFor(metricReason)
		g.Expect(after.failures).To(Equal(before.failures+1), "imageimport_task_failures_total{reason=%q}", metricReason)
		g.Expect(after.durations).To(BeNumerically(">=", before.durations+1), `imageimport_task_duration_seconds_count{status="failure"}`)
	}, wait).Should(Succeed())
	NewWithT(t).Eventually(func() []taskEvent { return eventsOf(t, task) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", reason),
		HaveField("Note", HavePrefix("Task failed: ")))), "the failure's Warning event")
}
