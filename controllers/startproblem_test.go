package controllers

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// waitForCondition waits until the task's condition has the reason, and
// returns the task.
func waitForCondition(t *testing.T, task *tasksv1.ImageImportTask, typ, reason string) *tasksv1.ImageImportTask {
	t.Helper()
	got := &tasksv1.ImageImportTask{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(Succeed())
		c := meta.FindStatusCondition(got.Status.Conditions, typ)
		g.Expect(c).NotTo(BeNil(), "conditions: %+v", got.Status.Conditions)
		g.Expect(c.Reason).To(Equal(reason), "message: %q", c.Message)
	}, wait).Should(Succeed())
	return got
}

// expectWaiting checks that a task tells why its importer cannot start: in
// its conditions, its message, a Warning event and the metrics.
func expectWaiting(t *testing.T, task *tasksv1.ImageImportTask, status tasksv1.TaskStatus, reason, message string, problemsBefore float64) {
	t.Helper()
	g := NewWithT(t)
	got := waitForCondition(t, task, tasksv1.ConditionReconciling, reason)
	g.Expect(got.Status.Status).To(Equal(status))
	g.Expect(got.Status.Message).To(ContainSubstring(message))
	ready := meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(ready.Status).To(Equal(metav1.ConditionUnknown))
	g.Expect(ready.Reason).To(Equal(reason))
	g.Expect(ready.Message).To(Equal(got.Status.Message))
	g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, tasksv1.ConditionReconciling)).To(BeTrue())
	g.Eventually(func() []taskEvent { return eventsOf(t, task) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", reason), HaveField("Note", ContainSubstring(message)))))
	g.Eventually(func() float64 { return startProblems(reason) }, wait).Should(Equal(problemsBefore + 1))
	g.Eventually(func() float64 {
		return gathered("imageimport_tasks_waiting", map[string]string{"reason": reason})
	}, wait).Should(BeNumerically(">=", 1))
}

func startProblems(reason string) float64 {
	return gathered("imageimport_task_start_problems_total", map[string]string{"reason": reason})
}

// TestStoreClaimMissing: without a claim, a --store-storage-class or a
// default StorageClass (envtest has none), a task fails at once and says
// how to fix it, instead of waiting for a claim nothing would create.
func TestStoreClaimMissing(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespaceWithoutClaim(t)
	before := failureMetricsFor(tasksv1.ReasonStoreClaimMissing)
	start := time.Now()
	task := createTask(t, sampleTask(ns, "no-claim"))
	got := waitForStatus(t, task, tasksv1.TaskFailure)
	g.Expect(time.Since(start)).To(BeNumerically("<", 10*time.Second), "it fails at once, not after --store-claim-timeout")
	g.Expect(got.Status.Message).To(Equal(`The image store claim "image-store" does not exist in namespace "` + ns + `", and the operator cannot create it: ` +
		`the manager has no --store-storage-class and the cluster has no default StorageClass. Create the claim (a ReadWriteOnce ` +
		`PersistentVolumeClaim named image-store), give the manager --store-storage-class, or import into a volume of a named ` +
		`class (spec.destination: {type: Volume, volume: {storageClassName: ...}}); then import again.`))
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tasksv1.ReasonStoreClaimMissing))
	expectFailureRecorded(t, task, tasksv1.ReasonStoreClaimMissing, tasksv1.ReasonStoreClaimMissing, before)
	g.Expect(jobsOf(t, task)).To(BeEmpty(), "no Job whose pod could not run")
}

// deletingStoreClaim makes ns's store claim one that is being deleted:
// envtest runs no pvc-protection controller, so it stays so until the
// returned function removes its finalizers.
func deletingStoreClaim(t *testing.T, ns string) func() {
	t.Helper()
	ctx := context.Background()
	createStoreClaim(t, ns)
	pvc := &corev1.PersistentVolumeClaim{}
	key := client.ObjectKey{Namespace: ns, Name: testImporterConfig().StoreClaimName}
	g := NewWithT(t)
	g.Expect(k8sClient.Get(ctx, key, pvc)).To(Succeed())
	if len(pvc.Finalizers) == 0 { // the API server adds kubernetes.io/pvc-protection; in case it did not
		pvc.Finalizers = []string{"test.imageimport.io/hold"}
		g.Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
	}
	g.Expect(k8sClient.Delete(ctx, pvc)).To(Succeed())
	return func() {
		g.Expect(k8sClient.Patch(ctx, pvc, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))).To(Succeed())
	}
}

// TestStoreClaimTimeout: a task whose store claim is being deleted waits
// for it to be replaced, within the manager's bound, and then fails, and
// says why; the bound runs on the reconciler's clock, and the requeue at
// its end fires.
func TestStoreClaimTimeout(t *testing.T) {
	g := NewWithT(t)
	const bound = 5 * time.Minute
	clk, _, labels := startClockManager(t, bound)
	ns := newNamespaceWithoutClaim(t)
	t.Cleanup(deletingStoreClaim(t, ns))
	task := sampleTask(ns, "never-a-claim")
	task.Labels = labels
	problemsBefore := startProblems(tasksv1.ReasonStoreClaimMissing)
	createTask(t, task)
	expectWaiting(t, task, tasksv1.TaskPending, tasksv1.ReasonStoreClaimMissing, "is being deleted: the import starts once it is gone and replaced", problemsBefore)

	before := failureMetricsFor(tasksv1.ReasonStoreClaimMissing)
	clk.Step(bound - 10*time.Second)
	g.Consistently(func() tasksv1.TaskStatus {
		got := &tasksv1.ImageImportTask{}
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(Succeed())
		return got.Status.Status
	}, time.Second).Should(Equal(tasksv1.TaskPending), "not before the bound")
	clk.Step(15 * time.Second)
	got := waitForStatus(t, task, tasksv1.TaskFailure)
	g.Expect(got.Status.Message).To(Equal(`The image store claim "image-store" in namespace "` + ns +
		`" is being deleted: the import waited 5m0s for it to go and be replaced. Create the claim and import again.`))
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tasksv1.ReasonStoreClaimMissing))
	g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, tasksv1.ConditionStalled)).To(BeTrue())
	expectFailureRecorded(t, task, tasksv1.ReasonStoreClaimMissing, tasksv1.ReasonStoreClaimMissing, before)
	g.Expect(jobsOf(t, task)).To(BeEmpty())
}

// TestImporterCannotStart: what keeps an importer pod from starting shows
// in the task while it waits, and is the reason of its failure when the
// Job's deadline ends the wait. envtest runs no Job controller, scheduler
// or kubelet: the test writes what they would.
func TestImporterCannotStart(t *testing.T) {
	pending := func(mutate func(*corev1.PodStatus)) func(*testing.T, *batchv1.Job) {
		return func(t *testing.T, job *batchv1.Job) {
			pod := createPod(t, job, job.Name+"-a")
			status := corev1.PodStatus{Phase: corev1.PodPending}
			mutate(&status)
			setPodStatus(t, pod, status)
		}
	}
	waitingContainer := func(reason, message string) func(*corev1.PodStatus) {
		return func(s *corev1.PodStatus) {
			s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: importerContainer, Image: "localhost/imageimport/importer:test",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}}
		}
	}
	cases := []struct {
		name    string
		setup   func(*testing.T, *batchv1.Job)
		reason  string
		message string
	}{{
		name: "unschedulable",
		setup: pending(func(s *corev1.PodStatus) {
			s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}}
		}),
		reason:  tasksv1.ReasonUnschedulable,
		message: "The importer pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory.",
	}, {
		name:    "image pull",
		setup:   pending(waitingContainer("ImagePullBackOff", `Back-off pulling image "localhost/imageimport/importer:test": ErrImagePull: not found`)),
		reason:  tasksv1.ReasonImagePullFailed,
		message: `The importer image cannot be pulled: ImagePullBackOff: Back-off pulling image "localhost/imageimport/importer:test": ErrImagePull: not found`,
	}, {
		name: "quota",
		setup: func(t *testing.T, job *batchv1.Job) {
			warnAbout(t, job, "Job", "job-controller", "FailedCreate", `Error creating: pods "`+job.Name+`-x7k2p" is forbidden: `+
				`exceeded quota: compute, requested: requests.memory=128Mi, used: requests.memory=1Gi, limited: requests.memory=1Gi`)
		},
		reason:  tasksv1.ReasonQuotaExceeded,
		message: "A ResourceQuota refuses the importer pod: pods \"",
	}, {
		name: "pod security",
		setup: func(t *testing.T, job *batchv1.Job) {
			warnAbout(t, job, "Job", "job-controller", "FailedCreate", `Error creating: pods "`+job.Name+`-x7k2p" is forbidden: `+
				`violates PodSecurity "restricted:latest": seLinuxOptions`)
		},
		reason:  tasksv1.ReasonPodCreateFailed,
		message: "violates PodSecurity",
	}, {
		name: "stuck creating its container",
		setup: func(t *testing.T, job *batchv1.Job) {
			pod := createPod(t, job, job.Name+"-a")
			warnAbout(t, pod, "Pod", "kubelet", "FailedMount",
				`MountVolume.SetUp failed for volume "credentials" : secret "mirror-credentials" not found`)
			status := corev1.PodStatus{Phase: corev1.PodPending}
			waitingContainer("ContainerCreating", "")(&status)
			setPodStatus(t, pod, status)
		},
		reason:  tasksv1.ReasonContainerCreateFailed,
		message: `The importer container cannot be created: FailedMount: MountVolume.SetUp failed for volume "credentials" : secret "mirror-credentials" not found`,
	}, {
		name:    "container config",
		setup:   pending(waitingContainer("CreateContainerConfigError", `secret "x" not found`)),
		reason:  tasksv1.ReasonContainerCreateFailed,
		message: `The importer container cannot be created: CreateContainerConfigError: secret "x" not found`,
	}}
	ns := newNamespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := createTask(t, sampleTask(ns, "cannot-start-"+string(rune('a'+i))))
			job := waitForJob(t, task)
			waitForCondition(t, task, tasksv1.ConditionReconciling, tasksv1.ReasonJobCreated)
			problemsBefore := startProblems(tc.reason)
			patchJobStatus(t, job, func(s *batchv1.JobStatus) { // the Job controller starts the Job's clock
				now := metav1.Now()
				s.StartTime, s.Active, s.Ready = &now, 1, ptr.To[int32](0)
			})
			tc.setup(t, job)
			expectWaiting(t, task, tasksv1.TaskPending, tc.reason, tc.message, problemsBefore)

			// At the deadline the Job controller marks the Job as failing,
			// deletes its pods, and fails it once they are gone.
			before := failureMetricsFor(tc.reason)
			now := metav1.Now()
			patchJobStatus(t, job, func(s *batchv1.JobStatus) {
				s.Active = 0
				s.Conditions = append(s.Conditions, batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue,
					Reason: batchv1.JobReasonDeadlineExceeded, LastTransitionTime: now})
			})
			var pods corev1.PodList
			g.Expect(k8sClient.List(context.Background(), &pods, client.InNamespace(ns),
				client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)})).To(Succeed())
			for i := range pods.Items {
				g.Expect(k8sClient.Delete(context.Background(), &pods.Items[i])).To(Succeed())
			}
			g.Consistently(func() string { // what the pods said outlives them
				return waitForCondition(t, task, tasksv1.ConditionReconciling, tc.reason).Status.Message
			}, time.Second).Should(ContainSubstring(tc.message))
			patchJobStatus(t, job, func(s *batchv1.JobStatus) {
				s.Conditions = append(s.Conditions, batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue,
					Reason: batchv1.JobReasonDeadlineExceeded, LastTransitionTime: now})
			})
			got := waitForStatus(t, task, tasksv1.TaskFailure)
			g.Expect(got.Status.Message).To(HavePrefix("The import did not finish within 3600 seconds: "))
			g.Expect(got.Status.Message).To(ContainSubstring(tc.message))
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tc.reason))
			expectFailureRecorded(t, task, tc.reason, tc.reason, before)
		})
	}
}

// TestImporterStartsAfterAProblem: a problem that goes away leaves no trace
// in the status.
func TestImporterStartsAfterAProblem(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "late"))
	job := waitForJob(t, task)
	pod := createPod(t, job, job.Name+"-a")
	problemsBefore := startProblems(tasksv1.ReasonUnschedulable)
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Too many pods.",
	}}})
	expectWaiting(t, task, tasksv1.TaskPending, tasksv1.ReasonUnschedulable, "1 Too many pods.", problemsBefore)

	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}})
	startJob(t, job)
	got := waitForStatus(t, task, tasksv1.TaskProcessing)
	g.Expect(got.Status.Message).To(BeEmpty())
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReconciling).Reason).To(Equal(tasksv1.ReasonImporting))

	finishPod(t, job, job.Name+"-b", 0, resultJSON(t, importresult.Result{ImageID: imageID(task), Size: 1}), time.Now())
	completeJob(t, job)
	waitForStatus(t, task, tasksv1.TaskSuccess)
}

func TestStartProblem(t *testing.T) {
	now := time.Now()
	pod := func(age time.Duration, phase corev1.PodPhase, mutate ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", CreationTimestamp: metav1.NewTime(now.Add(-age))},
			Status: corev1.PodStatus{Phase: phase}}
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	waiting := func(reason string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.NodeName = "node-1"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: importerContainer,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "why"}}}}
		}
	}
	event := func(age time.Duration, reason, message string) corev1.Event {
		return corev1.Event{Reason: reason, Message: message, LastTimestamp: metav1.NewTime(now.Add(-age))}
	}
	quota := event(time.Second, "FailedCreate", `Error creating: pods "j-1" is forbidden: exceeded quota: q`)
	cases := []struct {
		name          string
		pods          []corev1.Pod
		failedCreates []corev1.Event
		warnings      []corev1.Event
		want          *problem
	}{
		{"Job just created", nil, nil, nil, nil},
		{"quota", nil, []corev1.Event{event(time.Minute, "FailedCreate", "Error creating: older"), quota}, nil,
			&problem{tasksv1.ReasonQuotaExceeded, `A ResourceQuota refuses the importer pod: pods "j-1" is forbidden: exceeded quota: q`}},
		{"quota refusal older than the pod", []corev1.Pod{pod(0, corev1.PodPending)}, []corev1.Event{quota}, nil, nil},
		{"quota refusal of a retry", []corev1.Pod{pod(time.Minute, corev1.PodFailed)}, []corev1.Event{quota}, nil,
			&problem{tasksv1.ReasonQuotaExceeded, `A ResourceQuota refuses the importer pod: pods "j-1" is forbidden: exceeded quota: q`}},
		{"running", []corev1.Pod{pod(time.Minute, corev1.PodRunning)}, []corev1.Event{quota}, nil, nil},
		{"image pull", []corev1.Pod{pod(0, corev1.PodPending, waiting("ErrImagePull"))}, nil, nil,
			&problem{tasksv1.ReasonImagePullFailed, "The importer image cannot be pulled on node node-1: ErrImagePull: why"}},
		{"newest pod counts", []corev1.Pod{pod(time.Minute, corev1.PodPending, waiting("ErrImagePull")), pod(0, corev1.PodPending)}, nil, nil, nil},
		{"creating, no warning yet", []corev1.Pod{pod(0, corev1.PodPending, waiting("ContainerCreating"))}, nil, nil, nil},
		{"creating with warnings", []corev1.Pod{pod(0, corev1.PodPending, waiting("ContainerCreating"))}, nil,
			[]corev1.Event{event(time.Second, "FailedCreatePodSandBox", "new"), event(time.Minute, "FailedMount", "old")},
			&problem{tasksv1.ReasonContainerCreateFailed, "The importer container cannot be created: FailedCreatePodSandBox: new"}},
		{"not scheduled yet: warnings are the scheduler's", []corev1.Pod{pod(0, corev1.PodPending)}, nil,
			[]corev1.Event{event(time.Second, "FailedScheduling", "x")}, nil},
		{"creating after waiting for room: the scheduler's warning is over", []corev1.Pod{pod(0, corev1.PodPending, waiting("ContainerCreating"))}, nil,
			[]corev1.Event{event(0, "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")}, nil},
		{"creating, with a kubelet warning that does not keep it from starting", []corev1.Pod{pod(0, corev1.PodPending, waiting("ContainerCreating"))}, nil,
			[]corev1.Event{event(0, "MissingClusterDNS", `kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. Falling back to "Default" policy.`),
				event(0, "DNSConfigForming", "Nameserver limits were exceeded")}, nil},
		{"creating after waiting for room, then a warning", []corev1.Pod{pod(0, corev1.PodPending, waiting("ContainerCreating"))}, nil,
			[]corev1.Event{event(time.Second, "FailedMount", "new"), event(0, "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")},
			&problem{tasksv1.ReasonContainerCreateFailed, "The importer container cannot be created: FailedMount: new"}},
		{"unschedulable", []corev1.Pod{pod(0, corev1.PodPending, func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: `0/1 nodes are available: persistentvolumeclaim "image-store" not found.`}}
		})}, nil, nil, &problem{tasksv1.ReasonUnschedulable,
			`The importer pod cannot be scheduled: 0/1 nodes are available: persistentvolumeclaim "image-store" not found.`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := startProblem(tc.pods, tc.failedCreates, tc.warnings)
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("startProblem() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestATransitionIsToldOnceWhenTheCacheLags: a reconcile that reads the
// task from a cache that has not yet seen the status the last reconcile
// wrote does not tell that status's transition again. Before, it took the
// older copy for the task's state and emitted the Warning event and the
// start-problem metric a second time (CI saw the metric at 2 for one
// problem), and its merge patch could put older conditions back. Here the
// lagging cache is a real one, stopped before the first reconcile wrote.
func TestATransitionIsToldOnceWhenTheCacheLags(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	_, r, task, job := startWaitingTask(t, "told-once")

	// A cache that stops here, with the task as it is and its Job.
	frozen := frozenCache(t, func(g Gomega, c cache.Cache) {
		var seen tasksv1.ImageImportTask
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(task), &seen)).To(Succeed())
		g.Expect(seen.Status.JobName).To(Equal(job.Name))
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed())
	})

	// The importer cannot start; the manager tells it, once.
	reason := tasksv1.ReasonPodCreateFailed
	problemsBefore := startProblems(reason)
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		now := metav1.Now()
		s.StartTime, s.Active, s.Ready = &now, 1, ptr.To[int32](0)
	})
	warnAbout(t, job, "Job", "job-controller", "FailedCreate", `Error creating: pods "`+job.Name+`-x7k2p" is forbidden: `+
		`violates PodSecurity "restricted:latest": seLinuxOptions`)
	expectWaiting(t, task, tasksv1.TaskPending, reason, "violates PodSecurity", problemsBefore)

	// A reconcile that reads the stopped cache.
	lagging := *r
	var err error
	lagging.Client, err = client.New(testCfg, client.Options{Scheme: testScheme, Cache: &client.CacheOptions{Reader: frozen}})
	g.Expect(err).NotTo(HaveOccurred())
	lagging.conflicts = newConflictBackoff() // its own: the manager's forgets the task at its next write
	var retries []time.Duration
	for range 3 {
		res, err := lagging.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(task)})
		g.Expect(err).NotTo(HaveOccurred())
		retries = append(retries, res.RequeueAfter)
	}
	g.Expect(retries).To(Equal([]time.Duration{conflictRetry, 2 * conflictRetry, 4 * conflictRetry}),
		"a task whose writes keep conflicting is retried less and less often")
	// (The Warning event, told again, would only count up a series on the
	// same Event: the metric is what shows it.)
	g.Expect(startProblems(reason)).To(Equal(problemsBefore+1), "the problem was told again")
	got := waitForCondition(t, task, tasksv1.ConditionReconciling, reason)
	g.Expect(got.Status.Message).To(ContainSubstring("violates PodSecurity"), "the older status was written back")
}

// TestWhatThePodsSaidOutlivesThemWhenJobsLag: the Job controller marks a
// Job it ends (FailureTarget) before it deletes its pods, but the pods and
// the Jobs come by different watches. A reconcile that sees the pods gone
// while its cache still has the Job unmarked keeps what the pods said
// about why the importer could not start, instead of going back to
// waiting for the importer (and losing the reason the failure then
// gives). Before, CI saw the reason go back to JobCreated. Here the
// reconcile reads Jobs from a real cache stopped before the mark.
func TestWhatThePodsSaidOutlivesThemWhenJobsLag(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	stop, r, task, job := startWaitingTask(t, "pull-failed")
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		now := metav1.Now()
		s.StartTime, s.Active, s.Ready = &now, 1, ptr.To[int32](0)
	})
	pod := createPod(t, job, job.Name+"-a")
	status := corev1.PodStatus{Phase: corev1.PodPending}
	status.ContainerStatuses = []corev1.ContainerStatus{{Name: importerContainer, Image: "localhost/imageimport/importer:test",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "not found"}}}}
	setPodStatus(t, pod, status)
	waitForCondition(t, task, tasksv1.ConditionReconciling, tasksv1.ReasonImagePullFailed)

	// Jobs as they are now, for good.
	frozen := frozenCache(t, func(g Gomega, c cache.Cache) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed())
	})

	// The manager stops; the Job controller ends the Job: marks it, then
	// deletes its pod.
	stop()
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		s.Active = 0
		s.Conditions = append(s.Conditions, batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue,
			Reason: batchv1.JobReasonDeadlineExceeded, LastTransitionTime: metav1.Now()})
	})
	g.Expect(k8sClient.Delete(ctx, pod)).To(Succeed())

	// A reconcile that sees the pod gone and the Job unmarked.
	lagging := *r
	var err error
	lagging.Client, err = client.New(testCfg, client.Options{Scheme: testScheme,
		Cache: &client.CacheOptions{Reader: jobsFrom{Reader: r.APIReader, jobs: frozen}}})
	g.Expect(err).NotTo(HaveOccurred())
	lagging.importerCache = podsFrom{Cache: r.importerCache, reader: r.APIReader}
	_, err = lagging.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(task)})
	g.Expect(err).NotTo(HaveOccurred())
	got := waitForCondition(t, task, tasksv1.ConditionReconciling, tasksv1.ReasonImagePullFailed)
	g.Expect(got.Status.Message).To(ContainSubstring("ImagePullBackOff: not found"))
}

// jobsFrom reads Jobs from jobs, and everything else from Reader.
type jobsFrom struct {
	client.Reader
	jobs client.Reader
}

func (r jobsFrom) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*batchv1.Job); ok {
		return r.jobs.Get(ctx, key, obj, opts...)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r jobsFrom) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*batchv1.JobList); ok {
		return r.jobs.List(ctx, list, opts...)
	}
	return r.Reader.List(ctx, list, opts...)
}

// podsFrom is the importer cache of a stopped manager, whose lists (pods,
// events) come from the API server instead.
type podsFrom struct {
	cache.Cache
	reader client.Reader
}

func (p podsFrom) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return p.reader.List(ctx, list, opts...)
}

// TestOneReconcileLabelsAndWritesTheStatus: the reconcile that labels a
// task with its image id writes the task's status too. The status write is
// made over the task as the reconcile read it (resourceVersion), and the
// label patch moved that on: a review found that every such first
// reconcile conflicted with its own label and was done again.
func TestOneReconcileLabelsAndWritesTheStatus(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	direct := directReconciler(t) // no manager reconciles tasks labelled no-manager: only this
	task := sampleTask(newNamespace(t), "recorded")
	task.Labels = map[string]string{labelManager: "no-manager"}
	task.Spec.Image = &tasksv1.ImageReference{Name: "some-image"}
	task.Spec.RecordedFailure = &tasksv1.RecordedFailure{Reason: "InvalidInput", Message: "Recorded."}
	createTask(t, task)
	res, err := direct.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(task)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).NotTo(Equal(conflictRetry), "the status write conflicted")
	var got tasksv1.ImageImportTask
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), &got)).To(Succeed())
	g.Expect(got.Labels).To(HaveKey(tasksv1.LabelImageID))
	g.Expect(got.Status.Status).To(Equal(tasksv1.TaskFailure))
}

// startWaitingTask runs, for the rest of the test, a manager of its own,
// and creates a task for it, named name, whose Job it has created.
func startWaitingTask(t *testing.T, name string) (func(), *ImageImportTaskReconciler, *tasksv1.ImageImportTask, *batchv1.Job) {
	t.Helper()
	id := strings.ToLower(rand.Text()[:12])
	stop, r, _ := startReconciler(managerOptions{only: id})
	t.Cleanup(stop)
	task := sampleTask(newNamespace(t), name)
	task.Labels = map[string]string{labelManager: id}
	createTask(t, task)
	job := waitForJob(t, task)
	waitForCondition(t, task, tasksv1.ConditionReconciling, tasksv1.ReasonJobCreated)
	return stop, r, task, job
}

// frozenCache is a real cache of the cluster, stopped once has says it
// holds what the test needs: from then on it lags.
func frozenCache(t *testing.T, has func(Gomega, cache.Cache)) cache.Cache {
	t.Helper()
	g := NewWithT(t)
	ctx, freeze := context.WithCancel(context.Background())
	defer freeze()
	c, err := cache.New(testCfg, cache.Options{Scheme: testScheme})
	g.Expect(err).NotTo(HaveOccurred())
	go c.Start(ctx)
	g.Expect(c.WaitForCacheSync(ctx)).To(BeTrue())
	g.Eventually(func(g Gomega) { has(g, c) }, wait).Should(Succeed())
	return c
}
