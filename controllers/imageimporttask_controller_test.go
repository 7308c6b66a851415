package controllers

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/progress"
)

func TestJobCreatedWithExpectedSpec(t *testing.T) {
	g := NewWithT(t)
	task := sampleTask(newNamespace(t), "cirros")
	task.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "mirror-credentials"}
	task.Spec.Source.Checksums = []tasksv1.Checksum{{Algorithm: "sha256", Value: strings.Repeat("ab", 32)}}
	createTask(t, task)

	job := waitForJob(t, task)
	g.Expect(metav1.IsControlledBy(job, task)).To(BeTrue(), "the task must be the Job's controller")
	g.Expect(job.OwnerReferences[0].BlockOwnerDeletion).To(Equal(ptr.To(true)))
	g.Expect(job.Spec.BackoffLimit).To(Equal(ptr.To[int32](3)), "backoffLimit defaults to 3")
	g.Expect(job.Spec.ActiveDeadlineSeconds).To(Equal(ptr.To[int64](3600)))
	g.Expect(job.Spec.PodFailurePolicy.Rules).To(HaveLen(2))
	g.Expect(job.Spec.PodFailurePolicy.Rules[1].OnExitCodes.Values).To(Equal([]int32{2}))

	pod := job.Spec.Template.Spec
	c := pod.Containers[0]
	g.Expect(c.Image).To(Equal("localhost/imageimport/importer:test"))
	g.Expect(c.Args).To(ContainElements(
		"--source=https://images.test/cirros.qcow2", "--source-format=qcow2", "--target-format=raw",
		"--image-id="+imageID(task), "--credentials-dir="+credentialsMountPath,
		"--expected-sha256="+strings.Repeat("ab", 32), "--allowed-hosts=images.test"))
	g.Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(pod.ServiceAccountName).To(Equal(job.Name), "the import's own service account")
	g.Expect(c.Args).To(ContainElement("--progress-task=" + task.Namespace + "/cirros"))
	g.Expect(pod.Volumes).To(ContainElement(HaveField("Name", "credentials")))

	got := waitForStatus(t, task, tasksv1.TaskPending)
	g.Expect(got.Status.JobName).To(Equal(job.Name))
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Status).To(Equal(metav1.ConditionUnknown))
	g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, tasksv1.ConditionReconciling)).To(BeTrue())
	g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
	g.Eventually(func() []string { return eventReasons(t, task) }, wait).Should(ContainElement("JobCreated"))
}

func TestSuccessPath(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "ok"))
	job := waitForJob(t, task)

	startJob(t, job)
	waitForStatus(t, task, tasksv1.TaskProcessing)
	// The importer's last push before it exits: 59% of its last phase.
	pushed := task.DeepCopy()
	pushed.Status.Progress = &tasksv1.Progress{Phase: "Storing", Percent: ptr.To[int32](59), BytesDone: 590, BytesTotal: 1000}
	g.Expect(k8sClient.Status().Patch(context.Background(), pushed, client.MergeFrom(task))).To(Succeed())

	res := importresult.Result{
		ImageID: imageID(task), Size: 41126400, VirtualSize: 117440512, SourceFormat: "qcow2", DiskFormat: "raw",
		Checksum: strings.Repeat("1", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("2", 128),
	}
	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, res), time.Now())
	completeJob(t, job)

	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Result).To(Equal(&tasksv1.TaskResult{ImageID: imageID(task)}))
	g.Expect(got.Status.Message).To(BeEmpty())
	g.Expect(got.Status.Image).To(Equal(&tasksv1.ImageInfo{
		Size: 41126400, VirtualSize: 117440512, Checksum: res.Checksum, OSHashAlgo: "sha512", OSHashValue: res.OSHashValue,
		SourceFormat: "qcow2", DiskFormat: "raw", ContainerFormat: "bare",
		Location: "pvc://" + task.Namespace + "/image-store/" + imageID(task),
	}))
	g.Expect(got.Status.ExpiresAt.Sub(got.Status.CompletionTime.Time)).To(Equal(testTTL))
	g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, tasksv1.ConditionReady)).To(BeTrue())
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReconciling)).To(BeNil())
	g.Expect(got.Status.Progress).To(Equal(&tasksv1.Progress{
		Phase: "Done", Percent: ptr.To[int32](100), BytesDone: 41126400, BytesTotal: 41126400,
	}), "a finished import is 100%% done, whatever the importer pushed last")
	g.Eventually(func() []string { return eventReasons(t, task) }, wait).Should(
		ContainElements("JobCreated", tasksv1.ReasonImporting, tasksv1.ReasonSucceeded))
}

// The task succeeds once its importer pod has, without waiting for the Job
// controller to count the pod: that took a second or more per task.
func TestSucceededPodEndsTheTaskBeforeTheJob(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "early"))
	job := waitForJob(t, task)
	startJob(t, job)
	res := importresult.Result{
		ImageID: imageID(task), Size: 4096, VirtualSize: 4096, SourceFormat: "raw", DiskFormat: "raw",
		Checksum: strings.Repeat("1", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("2", 128),
	}
	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, res), time.Now())

	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Image.Checksum).To(Equal(res.Checksum))
	g.Expect(got.Status.CompletionTime).NotTo(BeNil())
	g.Expect(got.Status.Attempts).To(Equal(int32(1)))

	completeJob(t, job) // the Job controller catches up: nothing changes
	g.Consistently(func() tasksv1.ImageImportTaskStatus {
		now := &tasksv1.ImageImportTask{}
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), now)).To(Succeed())
		return now.Status
	}, "2s").Should(Equal(got.Status))
}

// The importer pushes its result into the status before it exits: the task
// ends from it, without waiting for the kubelet to report the pod's end. A
// pushed failure is left to the Job, which may retry.
func TestImporterPushedResultEndsTheTask(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	running := func(name string) (*tasksv1.ImageImportTask, func(importresult.Result)) {
		task := createTask(t, sampleTask(ns, name))
		job := waitForJob(t, task)
		startJob(t, job)
		waitForStatus(t, task, tasksv1.TaskProcessing)
		status := importerStatus(t, task, job)
		return task, func(r importresult.Result) {
			g.Eventually(func() error {
				return status.ReportResult(ctx, []byte(resultJSON(t, r)), progress.Progress{Phase: "Storing", BytesDone: 10, BytesTotal: 20})
			}, wait).Should(Succeed()) // RBAC caches settle
		}
	}

	// Pushes the reconciler does not take: a failure (the Job may retry),
	// another image's result. Those tasks wait for their Jobs.
	failed, push := running("pushed-failure")
	push(importresult.Result{Reason: "SourceUnreachable", Error: "connection refused"})
	other, push := running("pushed-other")
	push(importresult.Result{ImageID: "not-this-task", Size: 1})
	for _, task := range []*tasksv1.ImageImportTask{failed, other} {
		g.Consistently(func() tasksv1.TaskStatus {
			got := &tasksv1.ImageImportTask{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
			return got.Status.Status
		}, "1s").Should(Equal(tasksv1.TaskProcessing), task.Name)
	}

	task, push := running("pushed")
	res := importresult.Result{
		ImageID: imageID(task), Size: 4096, VirtualSize: 8192, SourceFormat: "qcow2", DiskFormat: "raw",
		Checksum: strings.Repeat("1", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("2", 128), SHA256: strings.Repeat("3", 64),
	}
	push(res)
	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Image.Checksum).To(Equal(res.Checksum))
	g.Expect(got.Status.Image.SHA256).To(Equal(res.SHA256))
	g.Expect(got.Status.ImporterResult).To(BeEmpty(), "read into status.image")
	g.Expect(got.Status.Progress).To(Equal(&tasksv1.Progress{
		Phase: "Done", Percent: ptr.To[int32](100), BytesDone: 4096, BytesTotal: 4096,
	}))
	g.Expect(jobsOf(t, task)[0].Status.Conditions).To(BeEmpty(), "the Job has not finished")
}

// importerStatus is how the importer of a task's Job pushes into the task's
// status: with the service account the reconciler made for it.
func importerStatus(t *testing.T, task *tasksv1.ImageImportTask, job *batchv1.Job) *progress.TaskStatus {
	t.Helper()
	g := NewWithT(t)
	clientset := kubernetes.NewForConfigOrDie(testCfg)
	var tr *authnv1.TokenRequest
	g.Eventually(func() (err error) {
		tr, err = clientset.CoreV1().ServiceAccounts(task.Namespace).CreateToken(context.Background(), job.Name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
		return err
	}, wait).Should(Succeed())
	status, err := progress.New(testCfg.Host, testCfg.CAData, tr.Status.Token, task.Namespace, task.Name)
	g.Expect(err).NotTo(HaveOccurred())
	return status
}

func TestFailures(t *testing.T) {
	cases := []struct {
		name       string
		jobReason  string
		pods       []int32 // exit codes of the pods, in order
		lastResult *importresult.Result
		lastLog    string // termination message when not a result
		reason     string
		message    string
		attempts   int32
		complete   bool // the Job completed, without an image
	}{{
		name:       "permanent exit code fails at once",
		jobReason:  batchv1.JobReasonPodFailurePolicy,
		pods:       []int32{2},
		lastResult: &importresult.Result{Reason: importresult.ReasonUnsafeImage, Error: "The qcow2 image has a backing file, which is not allowed."},
		reason:     tasksv1.ReasonImportFailed,
		message:    "The qcow2 image has a backing file, which is not allowed.",
		attempts:   1,
	}, {
		name:       "transient exit codes retry until the backoff limit",
		jobReason:  batchv1.JobReasonBackoffLimitExceeded,
		pods:       []int32{1, 1, 1, 1},
		lastResult: &importresult.Result{Reason: importresult.ReasonNetworkError, Error: "The source answered HTTP 503 Service Unavailable."},
		reason:     tasksv1.ReasonBackoffLimitExceeded,
		message:    "The source answered HTTP 503 Service Unavailable. Gave up after 4 attempts.",
		attempts:   4,
	}, {
		name:      "a crash leaves its log tail",
		jobReason: batchv1.JobReasonBackoffLimitExceeded,
		pods:      []int32{137},
		lastLog:   "runtime: out of memory",
		reason:    tasksv1.ReasonBackoffLimitExceeded,
		message:   "The importer failed: exit code 137 (Error): runtime: out of memory. Gave up after 1 attempts.",
		attempts:  1,
	}, {
		name:      "deadline",
		jobReason: batchv1.JobReasonDeadlineExceeded,
		reason:    tasksv1.ReasonDeadlineExceeded,
		message:   "The import did not finish within 3600 seconds.",
		attempts:  1, // the pod the deadline killed ran (the task was processing)
	}, {
		name:     "complete without an image",
		pods:     []int32{0},
		lastLog:  "done",
		complete: true,
		reason:   tasksv1.ReasonImportFailed,
		message:  "The importer exited without reporting an imported image.",
		attempts: 1,
	}}
	ns := newNamespace(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := createTask(t, sampleTask(ns, "fail-"+string(rune('a'+i))))
			job := waitForJob(t, task)
			startJob(t, job)
			waitForStatus(t, task, tasksv1.TaskProcessing)
			metricReason := tc.reason
			if tc.lastResult != nil {
				metricReason = tc.lastResult.Reason
			}
			before := failureMetricsFor(metricReason)
			start := time.Now()
			for n, code := range tc.pods {
				msg := tc.lastLog
				if tc.lastResult != nil {
					msg = resultJSON(t, *tc.lastResult)
				}
				finishPod(t, job, job.Name+"-"+string(rune('a'+n)), code, msg, start.Add(time.Duration(n)*time.Second))
			}
			if tc.complete {
				completeJob(t, job)
			} else {
				failJob(t, job, tc.jobReason, int32(len(tc.pods)))
			}

			got := waitForStatus(t, task, tasksv1.TaskFailure)
			g.Expect(got.Status.Message).To(Equal(tc.message))
			g.Expect(got.Status.Result).To(BeNil())
			g.Expect(got.Status.Attempts).To(Equal(tc.attempts))
			ready := meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(tc.reason))
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, tasksv1.ConditionStalled)).To(BeTrue())
			g.Expect(got.Status.ExpiresAt).NotTo(BeNil())
			expectFailureRecorded(t, task, tc.reason, metricReason, before)
		})
	}
}

// TestRecordedFailureFailsAtOnce: a task that records an import that failed
// before it could run (the shim's accept-then-fail tasks) fails with its
// spec's reason and message, and never gets a Job.
func TestRecordedFailureFailsAtOnce(t *testing.T) {
	ns := newNamespace(t)
	for name, mutate := range map[string]func(*tasksv1.ImageImportTask){
		"without importFromFormat": func(t *tasksv1.ImageImportTask) { t.Spec.Input.ImportFromFormat = "" },
		"without imageProperties":  func(t *tasksv1.ImageImportTask) { t.Spec.Input.ImageProperties = nil },
		"complete input":           func(t *tasksv1.ImageImportTask) {},
		"into an image": func(t *tasksv1.ImageImportTask) {
			t.Spec.Image = &tasksv1.ImageReference{Name: "some-image"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			task := sampleTask(ns, "")
			task.GenerateName = "recorded-"
			task.Spec.RecordedFailure = &tasksv1.RecordedFailure{Reason: "InvalidInput", Message: "Recorded: " + name}
			mutate(task)
			before := failureMetricsFor(tasksv1.ReasonInvalidInput)
			createTask(t, task)
			got := waitForStatus(t, task, tasksv1.TaskFailure)
			g.Expect(got.Status.Message).To(Equal("Recorded: " + name))
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tasksv1.ReasonInvalidInput))
			expectFailureRecorded(t, task, tasksv1.ReasonInvalidInput, tasksv1.ReasonInvalidInput, before)
			g.Consistently(func() []batchv1.Job { return jobsOf(t, task) }, 2*time.Second).Should(BeEmpty(), "no Job for a recorded failure")
			if task.Spec.Image != nil {
				g.Expect(got.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, "some-image"))
			}
			var images tasksv1.ImageList
			g.Expect(k8sClient.List(context.Background(), &images, client.InNamespace(ns))).To(Succeed())
			g.Expect(images.Items).To(BeEmpty(), "a recorded failure creates no image")
		})
	}
}

// TestShimAnnotationsAreNotRead: the annotations the shim used to write
// (input problem, expiry policy) are no longer the controller's business.
func TestShimAnnotationsAreNotRead(t *testing.T) {
	g := NewWithT(t)
	task := sampleTask(newNamespace(t), "annotated")
	task.Annotations = map[string]string{tasksv1.AnnotationInputProblem: "Task failed due to Internal Error"}
	createTask(t, task)
	waitForJob(t, task)
	got := waitForStatus(t, task, tasksv1.TaskPending)
	g.Expect(got.Status.Message).To(BeEmpty())
}

func TestJobDeletedBehindTheControllersBack(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "orphan"))
	job := waitForJob(t, task)
	waitForStatus(t, task, tasksv1.TaskPending)

	before := failureMetricsFor(tasksv1.ReasonJobDeleted)
	g.Expect(k8sClient.Delete(context.Background(), job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())

	got := waitForStatus(t, task, tasksv1.TaskFailure)
	g.Expect(got.Status.Message).To(Equal("The import Job was deleted before the import finished."))
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tasksv1.ReasonJobDeleted))
	expectFailureRecorded(t, task, tasksv1.ReasonJobDeleted, tasksv1.ReasonJobDeleted, before)
	g.Consistently(func() []batchv1.Job { return jobsOf(t, task) }, 2*time.Second).Should(BeEmpty(), "a cancelled import must not start again")
}

func TestJobConflict(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespaceWithoutClaim(t)
	// While its store claim is being deleted the task waits, and creates
	// no Job: time for someone else to take its Job's name. Then the claim
	// goes, and a manager that may create one does.
	release := deletingStoreClaim(t, ns)
	labels := startManagerFor(t, func(c *ImporterConfig) { c.Destination.StoreStorageClass = "test-class" })
	task := sampleTask(ns, "conflict")
	task.Labels = labels
	createTask(t, task)
	waitForCondition(t, task, tasksv1.ConditionReconciling, tasksv1.ReasonStoreClaimMissing)
	intruder := desiredJob(task, testImporterConfig())
	intruder.Labels = nil
	g.Expect(k8sClient.Create(ctx, intruder)).To(Succeed())

	before := failureMetricsFor(tasksv1.ReasonJobConflict)
	release()
	got := waitForStatus(t, task, tasksv1.TaskFailure)
	g.Expect(got.Status.Message).To(Equal("Job " + intruder.Name + " already exists and does not belong to this task."))
	g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tasksv1.ReasonJobConflict))
	expectFailureRecorded(t, task, tasksv1.ReasonJobConflict, tasksv1.ReasonJobConflict, before)
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(intruder), intruder)).To(Succeed())
	g.Expect(metav1.GetControllerOf(intruder)).To(BeNil(), "the other Job is left alone")
}

func TestManagerRestartAndConcurrentManagersKeepOneJob(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	task := createTask(t, sampleTask(ns, "restart"))
	job := waitForJob(t, task)
	startJob(t, job)
	waitForStatus(t, task, tasksv1.TaskProcessing)

	// Restart mid-task; while the first manager is down, a second one runs
	// alongside (no leader election), so two reconcilers race on every task.
	managerStop()
	managerStop = startManager(managerOptions{metricsBind: metricsAddr})
	defer startManager(managerOptions{})()

	var burst []*tasksv1.ImageImportTask
	for i := range 10 {
		burst = append(burst, createTask(t, sampleTask(ns, "burst-"+string(rune('a'+i)))))
	}
	for _, b := range burst {
		waitForJob(t, b)
	}
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(t, task)).To(HaveLen(1))
		for _, b := range burst {
			g.Expect(jobsOf(t, b)).To(HaveLen(1), "task %s", b.Name)
		}
	}, 3*time.Second).Should(Succeed())
	g.Expect(jobsOf(t, task)[0].UID).To(Equal(job.UID), "the restarted manager adopted the same Job")

	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, importresult.Result{ImageID: imageID(task), Size: 1}), time.Now())
	completeJob(t, job)
	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Result.ImageID).To(Equal(imageID(task)))
}

func TestDeletingATaskCancelsItsImport(t *testing.T) {
	g := NewWithT(t)
	task := createTask(t, sampleTask(newNamespace(t), "cancel"))
	job := waitForJob(t, task)
	// envtest runs no garbage collector; the owner reference is what makes
	// the Job, and through the Job's own reference its pods, go with the task.
	ref := metav1.GetControllerOf(job)
	g.Expect(ref).NotTo(BeNil())
	g.Expect(ref.UID).To(Equal(task.UID))
	g.Expect(*ref.BlockOwnerDeletion).To(BeTrue())
	g.Expect(k8sClient.Delete(context.Background(), task)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), task))
	}, wait).Should(BeTrue())
}

// TestExpiryDeletesOnlyOptedInTasks moves the reconciler's clock past
// expiresAt: the requeue at expiresAt fires on that clock and deletes the
// tasks that opted in; a reconcile of a plain task after its expiry leaves
// it where it is.
func TestExpiryDeletesOnlyOptedInTasks(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	clk, rec, labels := startClockManager(t, 0)
	ns := newNamespace(t)
	plain := sampleTask(ns, "plain")
	bySpec := sampleTask(ns, "by-spec")
	bySpec.Spec.ExpiryPolicy = tasksv1.ExpiryPolicyDelete
	// The shim's old annotation is not read: only spec.expiryPolicy is.
	annotated := sampleTask(ns, "annotated")
	annotated.Annotations = map[string]string{tasksv1.AnnotationExpiryPolicy: "Delete"}
	tasks := []*tasksv1.ImageImportTask{plain, bySpec, annotated}
	for _, task := range tasks {
		task.Labels = labels
		createTask(t, task)
		job := waitForJob(t, task)
		finishPod(t, job, job.Name+"-a", 0, resultJSON(t, importresult.Result{ImageID: imageID(task), Size: 1}), time.Now())
		completeJob(t, job)
	}
	var expiresAt time.Time
	for _, task := range tasks {
		got := waitForStatus(t, task, tasksv1.TaskSuccess)
		g.Expect(got.Status.ExpiresAt.Sub(got.Status.CompletionTime.Time)).To(Equal(testTTL))
		expiresAt = laterOf(expiresAt, got.Status.ExpiresAt.Time)
	}
	gone := func(task *tasksv1.ImageImportTask) func() bool {
		return func() bool {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(task), &tasksv1.ImageImportTask{})
			return apierrors.IsNotFound(err)
		}
	}
	g.Consistently(gone(bySpec), time.Second).Should(BeFalse(), "nothing expires before expiresAt")

	clk.Step(expiresAt.Sub(clk.Now()) + time.Second)
	g.Eventually(gone(bySpec), wait).Should(BeTrue(), "expiryPolicy: Delete")

	// The requeues at expiresAt fired; a plain task reconciled now, past
	// its expiry, stays, and asks for no requeue.
	res, err := rec.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(plain)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(reconcile.Result{}))
	g.Consistently(gone(plain), 2*time.Second).Should(BeFalse(), "a plain task is never deleted")
	g.Expect(gone(annotated)()).To(BeFalse(), "the expiry-policy annotation is not read")
}

// TestATaskThatExpiresAsItEndsRecordsItsEnd: with --task-ttl=0 a task
// expires in the reconcile that finishes it. Deleted there, before its
// status write, and kept by another controller's finalizer, it was left
// without its end: the write met the deleted task, and a task being
// deleted is not reconciled.
func TestATaskThatExpiresAsItEndsRecordsItsEnd(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	id := strings.ToLower(rand.Text()[:12])
	stop, _, _ := startReconciler(managerOptions{taskTTL: ptr.To(time.Duration(0)), only: id})
	t.Cleanup(stop)
	ns := newNamespace(t)
	task := sampleTask(ns, "expires-at-once")
	task.Labels = map[string]string{labelManager: id}
	task.Spec.ExpiryPolicy = tasksv1.ExpiryPolicyDelete
	task.Finalizers = []string{"test.imageimport.io/keep"} // another controller's
	createTask(t, task)
	t.Cleanup(func() {
		got := &tasksv1.ImageImportTask{}
		if k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got) == nil {
			got.Finalizers = nil
			_ = k8sClient.Update(ctx, got)
		}
	})
	job := waitForJob(t, task)
	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, importresult.Result{ImageID: imageID(task), Size: 1}), time.Now())
	completeJob(t, job)

	got := &tasksv1.ImageImportTask{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
		g.Expect(got.DeletionTimestamp).NotTo(BeNil(), "expiryPolicy: Delete, at once")
	}, wait).Should(Succeed())
	g.Expect(got.Status.Status).To(Equal(tasksv1.TaskSuccess), "the end is recorded before the task is deleted")
	g.Expect(got.Status.ExpiresAt).NotTo(BeNil())
}

func TestMetricsServed(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	ok := createTask(t, sampleTask(ns, "metrics-ok"))
	job := waitForJob(t, ok)
	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, importresult.Result{ImageID: imageID(ok), Size: 1}), time.Now())
	completeJob(t, job)
	waitForStatus(t, ok, tasksv1.TaskSuccess)
	bad := createTask(t, sampleTask(ns, "metrics-bad"))
	job = waitForJob(t, bad)
	failure := importresult.Result{Reason: importresult.ReasonChecksumMismatch, Error: "The source's sha256 does not match."}
	finishPod(t, job, job.Name+"-a", 2, resultJSON(t, failure), time.Now())
	failJob(t, job, batchv1.JobReasonPodFailurePolicy, 1)
	waitForStatus(t, bad, tasksv1.TaskFailure)

	g.Eventually(func(g Gomega) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		g.Expect(string(body)).To(And(
			MatchRegexp(`imageimport_tasks\{status="success"\} [1-9]`),
			MatchRegexp(`imageimport_tasks\{status="failure"\} [1-9]`),
			MatchRegexp(`imageimport_task_duration_seconds_count\{status="success"\} [1-9]`),
			ContainSubstring(`imageimport_task_failures_total{reason="ChecksumMismatch"} 1`),
			ContainSubstring(`imageimport_job_retries_total`),
			ContainSubstring(`controller_runtime_reconcile_total{controller="imageimporttask"`),
		))
	}, wait).Should(Succeed())
}

// TestImporterPushesProgressWithItsOwnServiceAccount: the importer's service
// account may patch its own task's status, and nothing else.
func TestImporterPushesProgressWithItsOwnServiceAccount(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, sampleTask(ns, "progress"))
	other := createTask(t, sampleTask(ns, "other"))
	job := waitForJob(t, task)
	waitForJob(t, other)

	sa, role, binding := &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}
	for _, obj := range []client.Object{sa, role, binding} {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: job.Name}, obj)).To(Succeed())
		g.Expect(metav1.IsControlledBy(obj, task)).To(BeTrue(), "%T goes with the task", obj)
	}
	g.Expect(role.Rules[0].ResourceNames).To(Equal([]string{"progress"}))

	clientset := kubernetes.NewForConfigOrDie(testCfg)
	tr, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	report := func(name string) error {
		status, err := progress.New(testCfg.Host, testCfg.CAData, tr.Status.Token, ns, name)
		g.Expect(err).NotTo(HaveOccurred())
		return status.Report(ctx, progress.Progress{Phase: "Fetching", BytesDone: 50, BytesTotal: 200})
	}
	g.Eventually(func() error { return report("progress") }, wait).Should(Succeed()) // RBAC caches settle
	got := &tasksv1.ImageImportTask{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
	g.Expect(got.Status.Progress.Phase).To(Equal("Fetching"))
	g.Expect(got.Status.Progress.BytesDone).To(Equal(int64(50)))
	g.Expect(*got.Status.Progress.Percent).To(Equal(int32(25)))
	g.Expect(report("other")).To(MatchError(ContainSubstring("HTTP 403")), "another task's status is out of reach")

	// The reconciler keeps the pushed bytes when the status moves.
	startJob(t, job)
	got = waitForStatus(t, task, tasksv1.TaskProcessing)
	g.Expect(got.Status.Progress.BytesDone).To(Equal(int64(50)))
}
