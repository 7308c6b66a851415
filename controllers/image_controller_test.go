package controllers

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// queuedImage creates an Image as the shim does: named by a Glance id,
// spec filled, no status.
func queuedImage(t *testing.T, ns, name string) *tasksv1.Image {
	t.Helper()
	img := &tasksv1.Image{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       tasksv1.ImageSpec{Name: "cirros", DiskFormat: "raw", ContainerFormat: "bare"},
	}
	NewWithT(t).Expect(k8sClient.Create(context.Background(), img)).To(Succeed())
	return img
}

// importInto is a task that fills the named Image, as the shim's
// web-download import creates it.
func importInto(ns, name, image string, onFailure tasksv1.ImageFailurePolicy) *tasksv1.ImageImportTask {
	task := sampleTask(ns, name)
	task.Spec.Image = &tasksv1.ImageReference{Name: image, OnFailure: onFailure}
	return task
}

// waitForImage waits until the Image has the status and returns it.
func waitForImage(t *testing.T, ns, name string, status tasksv1.ImagePhase) *tasksv1.Image {
	t.Helper()
	img := &tasksv1.Image{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, img)).To(Succeed())
		g.Expect(img.Status.Status).To(Equal(status), "conditions: %+v", img.Status.Conditions)
	}, wait).Should(Succeed())
	return img
}

func imageGone(ns, name string) func() bool {
	return func() bool {
		err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &tasksv1.Image{})
		return apierrors.IsNotFound(err)
	}
}

// succeed plays the importer and the Job controller of a successful import.
func succeed(t *testing.T, task *tasksv1.ImageImportTask, res importresult.Result) {
	t.Helper()
	job := waitForJob(t, task)
	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, res), time.Now())
	completeJob(t, job)
}

// failPermanently plays an importer that refused the source.
func failPermanently(t *testing.T, task *tasksv1.ImageImportTask, why string) {
	t.Helper()
	job := waitForJob(t, task)
	res := importresult.Result{Reason: importresult.ReasonUnsafeImage, Error: why}
	finishPod(t, job, job.Name+"-a", 2, resultJSON(t, res), time.Now())
	failJob(t, job, batchv1.JobReasonPodFailurePolicy, 1)
}

// eventsRegarding lists the events about the object with uid in ns.
func eventsRegarding(t *testing.T, ns string, uid types.UID) []taskEvent {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var events []taskEvent
	for _, e := range list.Items {
		if e.Regarding.UID == uid {
			events = append(events, taskEvent{e.Type, e.Reason, e.Note})
		}
	}
	return events
}

func imageTransitions(status tasksv1.ImagePhase) float64 {
	return gathered("imageimport_image_transitions_total", map[string]string{"status": string(status)})
}

func TestTaskCreatesItsImage(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task := sampleTask(ns, "own")
	task.Spec.Input.ImageProperties = &tasksv1.ImageProperties{
		DiskFormat: "raw", ContainerFormat: "ova", Name: "appliance", Visibility: "private",
		MinDisk: ptr.To[int32](2), MinRAM: ptr.To[int32](512), Tags: []string{"a", "b"},
		Protected: ptr.To(false), Properties: map[string]string{"os_distro": "cirros"},
	}
	activeBefore := imageTransitions(tasksv1.ImageActive)
	createTask(t, task)
	id := imageID(task)

	img := waitForImage(t, ns, id, tasksv1.ImageImporting)
	g.Expect(img.Spec).To(Equal(tasksv1.ImageSpec{
		Name: "appliance", DiskFormat: "raw", ContainerFormat: "ova", Visibility: "private",
		MinDisk: 2, MinRAM: 512, Tags: []string{"a", "b"}, Properties: map[string]string{"os_distro": "cirros"},
	}))
	g.Expect(img.Labels).To(HaveKeyWithValue(tasksv1.LabelTaskUID, string(task.UID)))
	g.Expect(img.Labels).To(HaveKeyWithValue(tasksv1.LabelTaskName, "own"))
	g.Expect(img.OwnerReferences).To(BeEmpty(), "deleting a task never deletes its image")
	g.Expect(img.Finalizers).To(ContainElement(tasksv1.FinalizerImageData))
	g.Expect(img.Status.ImportTask).To(Equal("own"))
	g.Expect(meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady).Status).To(Equal(metav1.ConditionUnknown))
	got := &tasksv1.ImageImportTask{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
	g.Expect(got.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, id), "the shim finds an image's tasks by this label")
	job := waitForJob(t, task)
	g.Expect(job.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--image-id=" + id))
	g.Expect(job.Spec.Template.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, id))

	succeed(t, task, importresult.Result{
		ImageID: id, Size: 4096, VirtualSize: 1 << 20, SourceFormat: "vmdk", DiskFormat: "raw",
		Checksum: strings.Repeat("1", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("2", 128),
		Unpacked: &importresult.Unpacked{OVAEntry: "disk1.vmdk", OVFName: "appliance"},
	})
	done := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(done.Status.Result.ImageID).To(Equal(id))
	img = waitForImage(t, ns, id, tasksv1.ImageActive)
	g.Expect(img.Status).To(And(
		HaveField("Size", Equal(ptr.To[int64](4096))), HaveField("VirtualSize", Equal(ptr.To[int64](1<<20))),
		HaveField("Checksum", strings.Repeat("1", 32)), HaveField("OSHashAlgo", "sha512"),
		HaveField("OSHashValue", strings.Repeat("2", 128)),
		HaveField("Location", "pvc://"+ns+"/image-store/"+id),
		HaveField("DiskFormat", tasksv1.DiskFormat("raw")),
		HaveField("ContainerFormat", tasksv1.ContainerFormat("bare")), // the disk taken out of the OVA
		HaveField("Unpacked", Equal(&tasksv1.UnpackedSource{OVAEntry: "disk1.vmdk", OVFName: "appliance"})),
	))
	ready := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(ready.Reason).To(Equal(tasksv1.ReasonSucceeded))
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElements(
		HaveField("Reason", "Created"), HaveField("Reason", tasksv1.ReasonImporting),
		And(HaveField("Reason", tasksv1.ReasonSucceeded), HaveField("Note", "Image is active: imported by task own"))))
	g.Expect(imageTransitions(tasksv1.ImageActive)).To(BeNumerically(">=", activeBefore+1))
}

func TestOwnImageKilledWhenTheImportFails(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	task := createTask(t, sampleTask(ns, "bad"))
	waitForImage(t, ns, imageID(task), tasksv1.ImageImporting)
	failPermanently(t, task, "The qcow2 image has a backing file, which is not allowed.")

	waitForStatus(t, task, tasksv1.TaskFailure)
	img := waitForImage(t, ns, imageID(task), tasksv1.ImageKilled)
	ready := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(ready.Reason).To(Equal(tasksv1.ReasonImportFailed))
	g.Expect(ready.Message).To(Equal("Task bad failed: The qcow2 image has a backing file, which is not allowed."))
	g.Expect(img.Status.Location).To(BeEmpty())
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElement(
		And(HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", tasksv1.ReasonImportFailed))))
}

func TestImportIntoAQueuedImage(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	const id = "0b5c7a48-4a4e-4c1d-9a0e-1f2e3d4c5b6a"
	img := queuedImage(t, ns, id)
	img = waitForImage(t, ns, id, tasksv1.ImageQueued)
	queued := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(queued.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(queued.Reason).To(Equal(tasksv1.ReasonQueued))
	g.Expect(img.Finalizers).To(BeEmpty(), "an image without data holds nothing up")

	task := createTask(t, importInto(ns, "web-download", id, ""))
	img = waitForImage(t, ns, id, tasksv1.ImageImporting)
	g.Expect(img.Status.ImportTask).To(Equal("web-download"))
	g.Expect(img.Finalizers).To(ContainElement(tasksv1.FinalizerImageData))
	job := waitForJob(t, task)
	g.Expect(job.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--image-id=" + id))

	succeed(t, task, importresult.Result{ImageID: id, Size: 512, DiskFormat: "raw"})
	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Result.ImageID).To(Equal(id))
	g.Expect(got.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, id))
	img = waitForImage(t, ns, id, tasksv1.ImageActive)
	g.Expect(img.Status.Location).To(Equal("pvc://" + ns + "/image-store/" + id))
	g.Expect(img.Status.Size).To(Equal(ptr.To[int64](512)))
	g.Expect(img.Spec.Name).To(Equal("cirros"), "the owner's spec is left alone")
	var own tasksv1.ImageList
	g.Expect(k8sClient.List(context.Background(), &own, client.InNamespace(ns))).To(Succeed())
	g.Expect(own.Items).To(HaveLen(1), "a task with spec.image creates no image of its own")
}

func TestFailedImportIntoAnImage(t *testing.T) {
	for _, tc := range []struct {
		onFailure tasksv1.ImageFailurePolicy
		want      tasksv1.ImagePhase
	}{{tasksv1.ImageFailureQueued, tasksv1.ImageQueued}, {tasksv1.ImageFailureKilled, tasksv1.ImageKilled}} {
		t.Run(string(tc.onFailure), func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			queuedImage(t, ns, "target")
			waitForImage(t, ns, "target", tasksv1.ImageQueued)
			task := createTask(t, importInto(ns, "try", "target", tc.onFailure))
			waitForImage(t, ns, "target", tasksv1.ImageImporting)
			failPermanently(t, task, "The source is not a qcow2 image.")

			waitForStatus(t, task, tasksv1.TaskFailure)
			img := waitForImage(t, ns, "target", tc.want)
			ready := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(tasksv1.ReasonImportFailed))
			g.Expect(ready.Message).To(Equal("Task try failed: The source is not a qcow2 image."))
			g.Expect(img.Status.ImportTask).To(Equal("try"), "the image's task tells what happened")
		})
	}
}

func TestAnotherImportIntoAQueuedAgainImage(t *testing.T) {
	// onFailure Queued: as Glance, another import may fill the image.
	g := NewWithT(t)
	ns := newNamespace(t)
	queuedImage(t, ns, "again")
	first := createTask(t, importInto(ns, "first", "again", ""))
	waitForImage(t, ns, "again", tasksv1.ImageImporting)
	failPermanently(t, first, "The source is not a qcow2 image.")
	waitForImage(t, ns, "again", tasksv1.ImageQueued)

	second := createTask(t, importInto(ns, "second", "again", ""))
	img := waitForImage(t, ns, "again", tasksv1.ImageImporting)
	g.Expect(img.Status.ImportTask).To(Equal("second"))
	succeed(t, second, importresult.Result{ImageID: "again", Size: 1})
	waitForImage(t, ns, "again", tasksv1.ImageActive)
}

func TestImportRefused(t *testing.T) {
	ns := newNamespace(t)
	active := createTask(t, sampleTask(ns, "made-it"))
	succeed(t, active, importresult.Result{ImageID: imageID(active), Size: 1})
	activeImage := waitForImage(t, ns, imageID(active), tasksv1.ImageActive)

	for _, tc := range []struct {
		name, image, reason, message string
	}{
		{"missing", "no-such-image", tasksv1.ReasonImageNotFound,
			"Image no-such-image does not exist in namespace " + ns + "."},
		{"active", activeImage.Name, tasksv1.ReasonImageNotQueued,
			"Image " + activeImage.Name + " is active: only a queued image can be imported into."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			before := failureMetricsFor(tc.reason)
			task := createTask(t, importInto(ns, "into-"+tc.name, tc.image, ""))
			got := waitForStatus(t, task, tasksv1.TaskFailure)
			g.Expect(got.Status.Message).To(Equal(tc.message))
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tc.reason))
			g.Expect(got.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, tc.image))
			expectFailureRecorded(t, task, tc.reason, tc.reason, before)
			g.Consistently(func() []batchv1.Job { return jobsOf(t, task) }, 2*time.Second).Should(BeEmpty())
		})
	}
	img := waitForImage(t, ns, activeImage.Name, tasksv1.ImageActive)
	NewWithT(t).Expect(img.Status).To(Equal(activeImage.Status), "a refused import leaves the image alone")
}

func TestDeletingATaskKeepsItsImage(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, sampleTask(ns, "ephemeral"))
	succeed(t, task, importresult.Result{ImageID: imageID(task), Size: 1})
	waitForStatus(t, task, tasksv1.TaskSuccess)
	waitForImage(t, ns, imageID(task), tasksv1.ImageActive)

	g.Expect(k8sClient.Delete(ctx, task)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task))
	}, wait).Should(BeTrue())
	g.Consistently(func() tasksv1.ImagePhase {
		return waitForImage(t, ns, imageID(task), tasksv1.ImageActive).Status.Status
	}, 2*time.Second).Should(Equal(tasksv1.ImageActive))
}

func TestDeletingATaskMidImportQueuesItsImageAgain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task, img, job, pod := importing(t, ns, "gone", "cancelled")
	g.Expect(k8sClient.Delete(ctx, task)).To(Succeed())
	// The garbage collector's part (envtest runs none): the Job goes at
	// once, its pod is being deleted but still runs.
	g.Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())

	g.Eventually(func() string {
		img = waitForImage(t, ns, "cancelled", tasksv1.ImageImporting)
		return meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady).Message
	}, wait).Should(Equal("Task gone was deleted; waiting for its importer to end: importer pod " + pod.Name + " is still running"))
	g.Consistently(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, 2*time.Second).Should(BeEmpty(),
		"nothing is removed, nor the image queued again, while the old importer may write its id")
	g.Expect(waitForImage(t, ns, "cancelled", tasksv1.ImageImporting).Status.ImportTask).To(Equal("gone"))

	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodFailed})
	var free batchv1.Job
	g.Eventually(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, wait).Should(HaveLen(1))
	free = cleanupJobsOf(t, ns)[0]
	g.Expect(free.Name).To(Equal(freeJobName(img)))
	g.Expect(free.Spec.Template.Spec.Containers[0].Args).To(Equal([]string{"remove", "--dest=" + storeMountPath, "--image-id=cancelled"}))
	g.Expect(free.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("image-store"))
	g.Expect(waitForImage(t, ns, "cancelled", tasksv1.ImageImporting).Status.ImportTask).To(Equal("gone"),
		"the image stays unclaimable while its cleanup runs")
	completeJob(t, &free)

	img = waitForImage(t, ns, "cancelled", tasksv1.ImageQueued)
	ready := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(ready.Reason).To(Equal(tasksv1.ReasonImportTaskDeleted))
	g.Expect(ready.Message).To(Equal("Task gone was deleted before its import ended; Job " + free.Name + " removed what it wrote"))
	g.Eventually(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, wait).Should(BeEmpty(), "the completed Job is dropped")
}

// A task deleted and created again under the same name, as a GitOps tool
// replaces an object, is another import: the first one's is cancelled
// (its importer waited for, what it wrote freed, the image queued again)
// before the second claims the image.
func TestATaskRecreatedUnderItsNameWaitsForTheFirstImport(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	first, img, job, pod := importing(t, ns, "gitops", "replaced")
	g.Expect(img.Status.ImportTaskUID).To(Equal(first.UID))
	g.Expect(k8sClient.Delete(ctx, first)).To(Succeed())
	g.Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	var second *tasksv1.ImageImportTask
	g.Eventually(func() error {
		second = importInto(ns, "gitops", "replaced", "")
		return k8sClient.Create(ctx, second)
	}, wait).Should(Succeed())

	g.Eventually(func() string {
		img := waitForImage(t, ns, "replaced", tasksv1.ImageImporting)
		return meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady).Message
	}, wait).Should(Equal("Task gitops was deleted; waiting for its importer to end: importer pod " + pod.Name + " is still running"))
	g.Consistently(func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: jobName(second)}, &batchv1.Job{})
	}, 2*time.Second).ShouldNot(Succeed(), "no second import while the first importer may write the image")
	g.Expect(waitForStatus(t, second, tasksv1.TaskPending).Status.Conditions).To(ContainElement(And(
		HaveField("Reason", tasksv1.ReasonPriorImportCancelling), HaveField("Message", ContainSubstring("for an earlier task named gitops")))))
	g.Eventually(func() []string { return eventReasons(t, second) }, wait).Should(ContainElement(tasksv1.ReasonPriorImportCancelling))

	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodFailed})
	g.Eventually(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, wait).Should(HaveLen(1))
	free := cleanupJobsOf(t, ns)[0]
	completeJob(t, &free)
	waitForJob(t, second)
	g.Expect(waitForImage(t, ns, "replaced", tasksv1.ImageImporting).Status.ImportTaskUID).To(Equal(second.UID))
}

// TestARecreatedTaskStartsWhenItsImageIsQueuedAgain: the watch of Images,
// not the task's own next look (an hour away here), brings the recreated
// task back once the first import is cancelled.
func TestARecreatedTaskStartsWhenItsImageIsQueuedAgain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	id := strings.ToLower(rand.Text()[:12])
	stop, _, _ := startReconciler(managerOptions{priorImportRecheck: time.Hour, only: id})
	t.Cleanup(stop)
	labels := map[string]string{labelManager: id}
	ns := newNamespace(t)
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "replaced", Labels: labels},
		Spec: tasksv1.ImageSpec{Name: "cirros", DiskFormat: "raw", ContainerFormat: "bare"}}
	g.Expect(k8sClient.Create(ctx, img)).To(Succeed())
	first := importInto(ns, "gitops", "replaced", "")
	first.Labels = labels
	createTask(t, first)
	waitForImage(t, ns, "replaced", tasksv1.ImageImporting)
	job := waitForJob(t, first)
	pod := createPod(t, job, job.Name+"-a")
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodRunning})
	g.Expect(k8sClient.Delete(ctx, first)).To(Succeed())
	g.Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	var second *tasksv1.ImageImportTask
	g.Eventually(func() error {
		second = importInto(ns, "gitops", "replaced", "")
		second.Labels = labels
		return k8sClient.Create(ctx, second)
	}, wait).Should(Succeed())
	waitForCondition(t, second, tasksv1.ConditionReconciling, tasksv1.ReasonPriorImportCancelling)

	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodFailed})
	g.Eventually(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, wait).Should(HaveLen(1))
	free := cleanupJobsOf(t, ns)[0]
	completeJob(t, &free)
	waitForJob(t, second)
}

// TestTasksWaitingForAnImageQueuedAgain: an Image queued again brings back
// at once the tasks of its id that have no Job yet (a task recreated under
// its name waits for that), and no others.
func TestTasksWaitingForAnImageQueuedAgain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	byName := map[string]*tasksv1.ImageImportTask{}
	for _, name := range []string{"waiting", "running", "ended", "other-image"} {
		task := importInto(ns, name, "shared", "")
		if name == "other-image" {
			task.Spec.Image.Name = "other"
		}
		task.Labels = map[string]string{labelManager: "no-manager", tasksv1.LabelImageID: task.Spec.Image.Name}
		byName[name] = createTask(t, task)
	}
	setTaskStatus(t, byName["running"], func(s *tasksv1.ImageImportTaskStatus) { s.JobName = "running-job" })
	setTaskStatus(t, byName["ended"], func(s *tasksv1.ImageImportTaskStatus) { s.Status = tasksv1.TaskFailure })
	direct := directReconciler(t)
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared"}}
	g.Expect(direct.tasksWaitingForImage(ctx, img)).To(ConsistOf(
		reconcile.Request{NamespacedName: client.ObjectKeyFromObject(byName["waiting"])}))

	queued := func(from, to tasksv1.ImagePhase) bool {
		return imageQueuedAgain().Update(event.UpdateEvent{
			ObjectOld: &tasksv1.Image{Status: tasksv1.ImageStatus{Status: from}},
			ObjectNew: &tasksv1.Image{Status: tasksv1.ImageStatus{Status: to}}})
	}
	g.Expect(queued(tasksv1.ImageImporting, tasksv1.ImageQueued)).To(BeTrue())
	g.Expect(queued(tasksv1.ImageQueued, tasksv1.ImageQueued)).To(BeFalse(), "no change of status")
	g.Expect(queued(tasksv1.ImageQueued, tasksv1.ImageImporting)).To(BeFalse())
}

// importing starts a task's import into a queued Image, and its importer
// pod running.
func importing(t *testing.T, ns, taskName, imageName string) (*tasksv1.ImageImportTask, *tasksv1.Image, *batchv1.Job, *corev1.Pod) {
	t.Helper()
	queuedImage(t, ns, imageName)
	task := createTask(t, importInto(ns, taskName, imageName, ""))
	img := waitForImage(t, ns, imageName, tasksv1.ImageImporting)
	job := waitForJob(t, task)
	pod := createPod(t, job, job.Name+"-a")
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodRunning})
	return task, img, job, pod
}

// activeImage imports an image with a task of its own and returns it.
func activeImage(t *testing.T, ns, taskName string) *tasksv1.Image {
	t.Helper()
	task := createTask(t, sampleTask(ns, taskName))
	succeed(t, task, importresult.Result{ImageID: imageID(task), Size: 1})
	return waitForImage(t, ns, imageID(task), tasksv1.ImageActive)
}

// cleanupJobOf waits for the Job that removes the image's data.
func cleanupJobOf(t *testing.T, img *tasksv1.Image) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	NewWithT(t).Eventually(func() error {
		return k8sClient.Get(context.Background(), client.ObjectKey{Namespace: img.Namespace, Name: cleanupJobName(img)}, job)
	}, wait).Should(Succeed(), "no cleanup Job")
	return job
}

func TestDeletingAnImageRemovesItsData(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	img := activeImage(t, ns, "doomed")
	removed := gathered("imageimport_image_deletions_total", map[string]string{"outcome": "removed"})

	g.Expect(k8sClient.Delete(ctx, img)).To(Succeed())
	waitForImage(t, ns, img.Name, tasksv1.ImageDeleted)
	job := cleanupJobOf(t, img)
	g.Expect(metav1.IsControlledBy(job, img)).To(BeTrue())
	g.Expect(job.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, img.Name))
	pod := job.Spec.Template.Spec
	g.Expect(pod.Containers[0].Args).To(Equal([]string{"remove", "--dest=" + storeMountPath, "--image-id=" + img.Name}))
	g.Expect(pod.Containers[0].Image).To(Equal(testImporterConfig().Image))
	g.Expect(pod.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("image-store"))
	g.Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	g.Expect(*pod.Containers[0].SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(*pod.Containers[0].SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
	g.Expect(pod.Containers[0].SecurityContext.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
	g.Expect(*pod.AutomountServiceAccountToken).To(BeFalse())
	g.Consistently(imageGone(ns, img.Name), time.Second).Should(BeFalse(), "the image stays until its data is gone")

	completeJob(t, job)
	g.Eventually(imageGone(ns, img.Name), wait).Should(BeTrue())
	g.Eventually(func() float64 {
		return gathered("imageimport_image_deletions_total", map[string]string{"outcome": "removed"})
	}, wait).Should(Equal(removed + 1))
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElements(
		HaveField("Reason", tasksv1.ReasonDeleting), HaveField("Reason", "CleanupJobCreated"),
		And(HaveField("Reason", "Deleted"), HaveField("Note", "Image deleted: Job "+job.Name+" removed its data"))))
}

func TestDeletingAnImageNeverImportedIntoReleasesItAtOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	queued := queuedImage(t, ns, "empty")
	waitForImage(t, ns, "empty", tasksv1.ImageQueued)
	g.Expect(k8sClient.Delete(ctx, queued)).To(Succeed())
	g.Eventually(imageGone(ns, "empty"), wait).Should(BeTrue())
	g.Expect(cleanupJobsOf(t, ns)).To(BeEmpty(), "no cleanup Job for an image never imported into")
}

func TestDeletingAKilledImageRemovesWhatItsImportLeft(t *testing.T) {
	// A killed import (OOM, SIGKILL, node loss) may leave staging files, or
	// even its image, under the image's id: the cleanup runs for it too.
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	bad := createTask(t, sampleTask(ns, "bad"))
	waitForImage(t, ns, imageID(bad), tasksv1.ImageImporting)
	failPermanently(t, bad, "The source is not a qcow2 image.")
	killed := waitForImage(t, ns, imageID(bad), tasksv1.ImageKilled)
	g.Expect(killed.Status.Location).To(BeEmpty())
	g.Expect(k8sClient.Delete(ctx, killed)).To(Succeed())

	job := cleanupJobOf(t, killed)
	pod := job.Spec.Template.Spec
	g.Expect(pod.Containers[0].Args).To(Equal([]string{"remove", "--dest=" + storeMountPath, "--image-id=" + killed.Name}))
	g.Expect(pod.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("image-store"))
	g.Consistently(imageGone(ns, killed.Name), time.Second).Should(BeFalse(), "the image stays until its leftovers are gone")
	completeJob(t, job)
	g.Eventually(imageGone(ns, killed.Name), wait).Should(BeTrue())
}

func TestDeletingAnImageWaitsForItsImport(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, sampleTask(ns, "slow"))
	img := waitForImage(t, ns, imageID(task), tasksv1.ImageImporting)
	job := waitForJob(t, task)
	startJob(t, job)

	g.Expect(k8sClient.Delete(ctx, img)).To(Succeed())
	deleting := waitForImage(t, ns, img.Name, tasksv1.ImageDeleted)
	g.Expect(meta.FindStatusCondition(deleting.Status.Conditions, tasksv1.ConditionReady).Message).To(
		Equal("Waiting for the import to end: task slow has not ended"))
	g.Consistently(func() bool {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: cleanupJobName(img)}, &batchv1.Job{})
		return apierrors.IsNotFound(err)
	}, 2*time.Second).Should(BeTrue(), "no cleanup while the importer may still write")

	finishPod(t, job, job.Name+"-a", 0, resultJSON(t, importresult.Result{ImageID: img.Name, Size: 1}), time.Now())
	completeJob(t, job)
	waitForStatus(t, task, tasksv1.TaskSuccess)
	cleanup := cleanupJobOf(t, img)
	g.Eventually(func() string {
		return waitForImage(t, ns, img.Name, tasksv1.ImageDeleted).Status.Location
	}, wait).ShouldNot(BeEmpty(), "the import's data is known, and removed")
	completeJob(t, cleanup)
	g.Eventually(imageGone(ns, img.Name), wait).Should(BeTrue())
}

func TestFailedCleanupIsRetried(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	img := activeImage(t, ns, "stubborn")
	failures := gathered("imageimport_image_cleanup_failures_total", nil)
	g.Expect(k8sClient.Delete(ctx, img)).To(Succeed())
	first := cleanupJobOf(t, img)
	failJob(t, first, batchv1.JobReasonBackoffLimitExceeded, 3)

	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElement(
		And(HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", tasksv1.ReasonCleanupFailed))))
	g.Eventually(func() float64 { return gathered("imageimport_image_cleanup_failures_total", nil) }, wait).Should(Equal(failures + 1))
	g.Consistently(func() types.UID { return cleanupJobOf(t, img).UID }, time.Second).Should(Equal(first.UID),
		"the failed Job is replaced only after the pause (the manager's CleanupRetry, 3 s)")
	var second *batchv1.Job
	g.Eventually(func() types.UID {
		second = cleanupJobOf(t, img)
		return second.UID
	}, wait).ShouldNot(Equal(first.UID), "a new cleanup Job replaces the failed one")
	g.Expect(imageGone(ns, img.Name)()).To(BeFalse(), "the image stays until its data is gone")
	completeJob(t, second)
	g.Eventually(imageGone(ns, img.Name), wait).Should(BeTrue())
}

// failedCleanup makes an Image that no manager reconciles, and its cleanup
// Job, failed; it returns an Image reconciler of a manager of the test's
// own, for the test's calls.
func failedCleanup(t *testing.T, name string) (*ImageReconciler, *tasksv1.Image, *batchv1.Job, cleanupRun) {
	t.Helper()
	g := NewWithT(t)
	stop, _, images := startReconciler(managerOptions{only: strings.ToLower(rand.Text()[:12])})
	t.Cleanup(stop)
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(t), Name: name,
		Labels: map[string]string{labelManager: "no-manager"}}}
	g.Expect(k8sClient.Create(context.Background(), img)).To(Succeed())
	run := cleanupRun{name: cleanupJobName(img), target: cleanupTarget{claim: "image-store", file: img.Name},
		what: "the image's data", ready: metav1.ConditionFalse, reason: tasksv1.ReasonDeleting}
	job := desiredCleanupJob(img, run.name, run.target, testImporterConfig())
	g.Expect(k8sClient.Create(context.Background(), job)).To(Succeed())
	failJob(t, job, batchv1.JobReasonBackoffLimitExceeded, 3)
	return images, img, job, run
}

// TestAFailedCleanupIsToldOnceWhenTheCacheLags: a reconcile whose cache
// holds a failed cleanup Job as it was before another reconcile marked it
// told does not tell of it again.
func TestAFailedCleanupIsToldOnceWhenTheCacheLags(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	managed, img, job, run := failedCleanup(t, "told-once")
	frozen := frozenCache(t, func(g Gomega, c cache.Cache) {
		var seen batchv1.Job
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(job), &seen)).To(Succeed())
		g.Expect(finishedCondition(&seen)).NotTo(BeNil())
	})

	r := *managed
	reg := prometheus.NewRegistry()
	r.Metrics = NewMetrics(reg, k8sClient) // counts these reconciles only
	lagging := r
	var err error
	r.Client, err = client.New(testCfg, client.Options{Scheme: testScheme})
	g.Expect(err).NotTo(HaveOccurred())
	lagging.Client, err = client.New(testCfg, client.Options{Scheme: testScheme, Cache: &client.CacheOptions{Reader: frozen}})
	g.Expect(err).NotTo(HaveOccurred())
	for _, rec := range []*ImageReconciler{&r, &lagging} {
		w := &imageWrite{r: rec, before: img.DeepCopy(), img: img.DeepCopy()}
		_, res, err := rec.runCleanupJob(ctx, w, run)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(res.RequeueAfter).To(BeNumerically(">", 0), "another cleanup Job starts later")
	}
	g.Expect(gatheredFrom(reg, "imageimport_image_cleanup_failures_total", nil)).To(Equal(1.0), "told once, by the reconcile that marked the Job")
}

// TestAFailedCleanupIsReplacedWhenItsFailureCannotBeMarked: telling is
// best effort; a mark the API server refuses (an older ClusterRole without
// patch on Jobs, a policy) does not keep the next cleanup Job from
// starting once the pause is over.
func TestAFailedCleanupIsReplacedWhenItsFailureCannotBeMarked(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	r, clk, img, job, run := cleanupOnFakeClock(t, "unmarked", apierrors.NewForbidden(batchv1.Resource("jobs"), "x", io.ErrUnexpectedEOF))
	w := &imageWrite{r: r, before: img.DeepCopy(), img: img.DeepCopy()}
	_, res, err := r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(BeNumerically(">", r.CleanupRetry/2), "the pause")
	clk.Step(r.CleanupRetry + time.Second)
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue(),
		"the pause is over, and the failed Job still kept: no other can start")
}

// TestAFailedCleanupIsToldWhenItsMarkFailsForAWhile: a mark that fails for
// a moment (the API server busy, a timeout) is tried again during the
// pause, and the failure is still told, once; after the pause the next Job
// goes on, told or not.
func TestAFailedCleanupIsToldWhenItsMarkFailsForAWhile(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	r, clk, img, job, run := cleanupOnFakeClock(t, "busy", apierrors.NewTooManyRequests("busy", 1))
	w := &imageWrite{r: r, before: img.DeepCopy(), img: img.DeepCopy()}
	_, _, err := r.runCleanupJob(ctx, w, run)
	g.Expect(apierrors.IsTooManyRequests(err)).To(BeTrue(), "a retry: %v", err)
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed())

	clk.Step(r.CleanupRetry + time.Second)
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred(), "the pause is over: the next Job goes on")
	g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue())

	r, _, img, _, run = cleanupOnFakeClock(t, "busy-then-not", apierrors.NewTooManyRequests("busy", 1))
	reg := prometheus.NewRegistry()
	r.Metrics = NewMetrics(reg, k8sClient) // counts these reconciles only
	w = &imageWrite{r: r, before: img.DeepCopy(), img: img.DeepCopy()}
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(apierrors.IsTooManyRequests(err)).To(BeTrue(), "a retry: %v", err)
	r.Client, err = client.New(testCfg, client.Options{Scheme: testScheme}) // the API server answers again
	g.Expect(err).NotTo(HaveOccurred())
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gatheredFrom(reg, "imageimport_image_cleanup_failures_total", nil)).To(Equal(1.0))
}

// cleanupOnFakeClock is failedCleanup with a reconciler of its own on a
// fake clock, with a 30 s pause; its patches of Jobs fail with
// markRefusal, if not nil.
func cleanupOnFakeClock(t *testing.T, name string, markRefusal error) (*ImageReconciler, *clocktesting.FakeClock, *tasksv1.Image, *batchv1.Job, cleanupRun) {
	t.Helper()
	managed, img, job, run := failedCleanup(t, name)
	direct, err := client.NewWithWatch(testCfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	r := *managed
	r.CleanupRetry = 30 * time.Second
	clk := clocktesting.NewFakeClock(time.Now())
	r.Clock = clk
	r.Client = direct
	if markRefusal != nil {
		r.Client = interceptor.NewClient(direct, interceptor.Funcs{
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if _, isJob := obj.(*batchv1.Job); isJob {
					return markRefusal
				}
				return c.Patch(ctx, obj, patch, opts...)
			},
		})
	}
	return &r, clk, img, job, run
}

// TestAFailedCleanupsPauseEndsWhateverItsFailuresTime: the pause before the
// next cleanup Job is timed by our clock, from when the failure was first
// told. A Failed condition an hour ahead of it (a skewed clock) neither
// restarts the pause at every reconcile nor stretches it.
func TestAFailedCleanupsPauseEndsWhateverItsFailuresTime(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	r, clk, img, job, run := cleanupOnFakeClock(t, "skewed", nil)
	failedAnHourAhead(t, job)
	w := &imageWrite{r: r, before: img.DeepCopy(), img: img.DeepCopy()}

	_, res, err := r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(BeNumerically("~", r.CleanupRetry, time.Second), "the pause starts")
	clk.Step(r.CleanupRetry / 2)
	_, res, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(BeNumerically("~", r.CleanupRetry/2, time.Second), "the pause goes on, not again")
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed())

	clk.Step(r.CleanupRetry / 2)
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue(),
		"the pause is over: the failed Job makes way for the next")

	// Unmarked (the mark refused), the pause runs from the Failed
	// condition: one ahead of our clock is no pause, not a pause without end.
	r, _, img, job, run = cleanupOnFakeClock(t, "skewed-unmarked", apierrors.NewForbidden(batchv1.Resource("jobs"), "x", io.ErrUnexpectedEOF))
	failedAnHourAhead(t, job)
	w = &imageWrite{r: r, before: img.DeepCopy(), img: img.DeepCopy()}
	_, _, err = r.runCleanupJob(ctx, w, run)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue())
}

// failedAnHourAhead moves the failure of job an hour ahead, as a skewed
// clock of the Job controller would write it.
func failedAnHourAhead(t *testing.T, job *batchv1.Job) {
	patchJobStatus(t, job, func(s *batchv1.JobStatus) {
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.NewTime(time.Now().Add(time.Hour))
		}
	})
}

// TestAnImageWriteThatMeetsANewerImageIsRetriedQuietly: the task
// reconciler writes an image's claim and finalizer while the Image
// reconciler settles it, and a cache may lag: such a conflict is a retry,
// not a "Reconciler error" in the log (37 of them in one bench/throughput
// run of 100 tasks).
func TestAnImageWriteThatMeetsANewerImageIsRetriedQuietly(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	stop, _, images := startReconciler(managerOptions{only: strings.ToLower(rand.Text()[:12])})
	t.Cleanup(stop)
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(t), Name: "lagging",
		Labels: map[string]string{labelManager: "no-manager"}}} // only the reconcile below
	g.Expect(k8sClient.Create(ctx, img)).To(Succeed())
	frozen := frozenCache(t, func(g Gomega, c cache.Cache) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(img), &tasksv1.Image{})).To(Succeed())
	})
	base := img.DeepCopy()
	img.Labels["changed"] = "since"
	g.Expect(k8sClient.Patch(ctx, img, client.MergeFrom(base))).To(Succeed())

	lagging := *images
	lagging.conflicts = newConflictBackoff()
	var err error
	lagging.Client, err = client.New(testCfg, client.Options{Scheme: testScheme, Cache: &client.CacheOptions{Reader: frozen}})
	g.Expect(err).NotTo(HaveOccurred())
	res, err := lagging.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(img)})
	g.Expect(err).NotTo(HaveOccurred(), "a conflict is a retry, not an error")
	g.Expect(res.RequeueAfter).To(Equal(conflictRetry))
	g.Expect(onlyConflicts(kerrors.NewAggregate([]error{apierrors.NewConflict(schema.GroupResource{}, "x", nil), io.EOF}))).
		To(BeFalse(), "an error beside the conflict is still an error")
}

func TestProtectedImageDeletionRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	img := queuedImage(t, ns, "precious")
	base := img.DeepCopy()
	img.Spec.Protected = true
	g.Expect(k8sClient.Patch(ctx, img, client.MergeFrom(base))).To(Succeed())

	err := k8sClient.Delete(ctx, img)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("Image precious is protected: set spec.protected to false before deleting it"))
	g.Expect(imageGone(ns, "precious")()).To(BeFalse())

	base = img.DeepCopy()
	img.Spec.Protected = false
	g.Expect(k8sClient.Patch(ctx, img, client.MergeFrom(base))).To(Succeed())
	g.Expect(k8sClient.Delete(ctx, img)).To(Succeed())
	g.Eventually(imageGone(ns, "precious"), wait).Should(BeTrue())
}

func TestRepairsARemovedDataFinalizer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	img := activeImage(t, ns, "held")
	base := img.DeepCopy()
	controllerutil.RemoveFinalizer(img, tasksv1.FinalizerImageData)
	g.Expect(k8sClient.Patch(ctx, img, client.MergeFrom(base))).To(Succeed())
	g.Eventually(func() []string {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(img), img)).To(Succeed())
		return img.Finalizers
	}, wait).Should(ContainElement(tasksv1.FinalizerImageData))
}

func TestImagesByStatusServed(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	activeImage(t, ns, "counted")
	queuedImage(t, ns, "waiting")
	waitForImage(t, ns, "waiting", tasksv1.ImageQueued)
	g.Expect(gathered("imageimport_images", map[string]string{"status": "active"})).To(BeNumerically(">=", 1))
	g.Expect(gathered("imageimport_images", map[string]string{"status": "queued"})).To(BeNumerically(">=", 1))
	g.Expect(imageTransitions(tasksv1.ImageQueued)).To(BeNumerically(">=", 1))
	g.Expect(imageTransitions(tasksv1.ImageImporting)).To(BeNumerically(">=", 1))
}

// TestKubectlGetImagesColumns reads images as kubectl get does (the Table
// the API server renders from the printer columns).
func TestKubectlGetImagesColumns(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	task := sampleTask(ns, "shown")
	task.Spec.Input.ImageProperties.Name = "cirros 0.6"
	createTask(t, task)
	succeed(t, task, importresult.Result{ImageID: imageID(task), Size: 41126400})
	waitForImage(t, ns, imageID(task), tasksv1.ImageActive)

	raw, err := kubernetes.NewForConfigOrDie(testCfg).RESTClient().Get().
		AbsPath("/apis", tasksv1.GroupVersion.Group, tasksv1.GroupVersion.Version, "namespaces", ns, "images").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	var table metav1.Table
	g.Expect(json.Unmarshal(raw, &table)).To(Succeed())
	var names []string
	for _, c := range table.ColumnDefinitions {
		names = append(names, c.Name)
	}
	g.Expect(names).To(Equal([]string{"Name", "Display Name", "Status", "Format", "Size", "Protected", "Task", "Age"}))
	g.Expect(table.Rows).To(HaveLen(1))
	g.Expect(table.Rows[0].Cells[:7]).To(Equal([]any{imageID(task), "cirros 0.6", "active", "raw", float64(41126400), false, "shown"}))
}

// Whose claim an image's status records: the task's name and UID, or for
// a claim made before UIDs were recorded, a task of the name that existed
// when the image last changed.
func TestClaimedBy(t *testing.T) {
	claimedAt := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	task := func(uid types.UID, created time.Time) *tasksv1.ImageImportTask {
		return &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{Name: "gitops", UID: uid, CreationTimestamp: metav1.NewTime(created)}}
	}
	img := func(name string, uid types.UID) *tasksv1.Image {
		return &tasksv1.Image{Status: tasksv1.ImageStatus{ImportTask: name, ImportTaskUID: uid, UpdatedAt: &claimedAt}}
	}
	before, after := claimedAt.Add(-time.Minute), claimedAt.Add(time.Minute)
	for _, tc := range []struct {
		name string
		img  *tasksv1.Image
		task *tasksv1.ImageImportTask
		want bool
	}{
		{"its UID", img("gitops", "a"), task("a", before), true},
		{"another UID", img("gitops", "a"), task("b", before), false},
		{"another name", img("other", "a"), task("a", before), false},
		{"no UID recorded, the task older than the claim", img("gitops", ""), task("b", before), true},
		{"no UID recorded, the task made since", img("gitops", ""), task("b", after), false},
	} {
		if got := claimedBy(tc.img, tc.task); got != tc.want {
			t.Errorf("%s: claimedBy %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestImportSucceededReadsTheClaimantsPods: a task of the same name that
// imported into the image before is another task; its pod's success is not
// the claimant's.
func TestImportSucceededReadsTheClaimantsPods(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	pod := func(uid types.UID, finished time.Time, res importresult.Result) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{tasksv1.LabelTaskName: "gitops", tasksv1.LabelTaskUID: string(uid)}},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: importerContainer,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					FinishedAt: metav1.NewTime(finished), Message: resultJSON(t, res)}}}}},
		}
	}
	stored := importresult.Result{ImageID: "img", Size: 1}
	refused := importresult.Result{ImageID: "img", Error: "not a qcow2 image", Reason: "InvalidImage"}
	img := func(uid types.UID) *tasksv1.Image {
		return &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "img"}, Status: tasksv1.ImageStatus{ImportTask: "gitops", ImportTaskUID: uid}}
	}
	// The earlier task's pod ended last: the claimant's was refused.
	pods := []corev1.Pod{pod("claimant", at, refused), pod("earlier", at.Add(time.Minute), stored)}
	if importSucceeded(pods, img("claimant")) {
		t.Error("the success of an earlier task of the same name was taken for the claimant's")
	}
	if !importSucceeded(pods, img("earlier")) {
		t.Error("the claimant's own success was not seen")
	}
	if !importSucceeded(pods, img("")) {
		t.Error("a claim without a UID reads the pods of the task's name")
	}
}

// TestFreeJobNameIsTheClaimsOwn: two claims by tasks of one name in the
// same second (a task replaced at once) free with Jobs of their own, so
// that the first one's, complete, is not taken for the second's.
func TestFreeJobNameIsTheClaimsOwn(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	claim := func(uid types.UID) *tasksv1.Image {
		return &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "img", UID: "image"},
			Status: tasksv1.ImageStatus{ImportTask: "gitops", ImportTaskUID: uid, UpdatedAt: &at}}
	}
	if a, b := freeJobName(claim("a")), freeJobName(claim("b")); a == b {
		t.Errorf("both claims free with Job %s", a)
	}
}

// A task recreated under the name of one whose import made the image
// active does not take the image back: only a queued image is imported
// into, whoever claimed it before.
func TestARecreatedTaskDoesNotReclaimAnActiveImage(t *testing.T) {
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Status: tasksv1.ImageStatus{Status: tasksv1.ImageActive, ImportTask: "gitops", UpdatedAt: &old}}
	task := &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{Name: "gitops", UID: "new", CreationTimestamp: metav1.Now()},
		Spec: tasksv1.ImageImportTaskSpec{Image: &tasksv1.ImageReference{Name: "x"}}}
	why := unclaimable(img, task)
	if why == nil || why.failure == nil || why.failure.reason != tasksv1.ReasonImageNotQueued {
		t.Fatalf("unclaimable: %+v, want ImageNotQueued", why)
	}
}
