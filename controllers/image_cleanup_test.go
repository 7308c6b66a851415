package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// cleanupJobsOf lists the cleanup Jobs in ns.
func cleanupJobsOf(t *testing.T, ns string) []batchv1.Job {
	t.Helper()
	var jobs batchv1.JobList
	err := k8sClient.List(context.Background(), &jobs, client.InNamespace(ns),
		client.MatchingLabels{"app.kubernetes.io/name": "image-cleanup"})
	if err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

// setLocation plays a status.location that is not the one the import
// recorded (an edit of the status, a migration).
func setLocation(t *testing.T, img *tasksv1.Image, location string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(img), img)).To(Succeed())
	base := img.DeepCopy()
	img.Status.Location = location
	g.Expect(k8sClient.Status().Patch(ctx, img, client.MergeFrom(base))).To(Succeed())
}

func createClaim(t *testing.T, ns, name string) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
	}
	NewWithT(t).Expect(k8sClient.Create(context.Background(), pvc)).To(Succeed())
}

func TestCleanupRemovesExactlyTheLocationsFile(t *testing.T) {
	// Downloads read the claim and file the location names; the cleanup
	// removes those, not the default claim's file named like the image.
	g := NewWithT(t)
	ns := newNamespace(t)
	createClaim(t, ns, "other-store")
	img := activeImage(t, ns, "moved")
	setLocation(t, img, "pvc://"+ns+"/other-store/0b5c7a48-4a4e-4c1d-9a0e-1f2e3d4c5b6a")
	g.Expect(k8sClient.Delete(context.Background(), img)).To(Succeed())

	job := cleanupJobOf(t, img)
	pod := job.Spec.Template.Spec
	g.Expect(pod.Containers[0].Args).To(Equal([]string{"remove", "--dest=" + storeMountPath, "--image-id=0b5c7a48-4a4e-4c1d-9a0e-1f2e3d4c5b6a"}))
	g.Expect(pod.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("other-store"))
	completeJob(t, job)
	g.Eventually(imageGone(ns, img.Name), wait).Should(BeTrue())
}

func TestCleanupRefusesALocationInAnotherNamespace(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	img := activeImage(t, ns, "foreign")
	foreign := "pvc://kube-system/image-store/" + img.Name
	setLocation(t, img, foreign)
	g.Expect(k8sClient.Delete(context.Background(), img)).To(Succeed())

	g.Eventually(func() string {
		got := waitForImage(t, ns, img.Name, tasksv1.ImageDeleted)
		return meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason
	}, wait).Should(Equal(tasksv1.ReasonLocationRefused))
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", tasksv1.ReasonLocationRefused),
		HaveField("Note", ContainSubstring(`location "`+foreign+`" is in namespace "kube-system", not in the image's own (`+ns+`)`)))))
	g.Consistently(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, 2*time.Second).Should(BeEmpty(),
		"no file is removed on behalf of a location that is not the image's")
	g.Expect(imageGone(ns, img.Name)()).To(BeFalse(), "the image keeps track of its data")

	// Corrected, the deletion goes on.
	setLocation(t, img, "pvc://"+ns+"/image-store/"+img.Name)
	job := cleanupJobOf(t, img)
	completeJob(t, job)
	g.Eventually(imageGone(ns, img.Name), wait).Should(BeTrue())
}

func TestSucceededTaskDeletedBeforeSettlingKillsItsImageAndFreesTheFile(t *testing.T) {
	// As the manager finds it after a downtime during which the task
	// succeeded and its TTL deleted it: the image importing for a task that
	// is gone, the importer pod's result still readable.
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	img := queuedImage(t, ns, "orphan")
	img = waitForImage(t, ns, "orphan", tasksv1.ImageQueued)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ttl-gone-importer", Labels: map[string]string{
			"app.kubernetes.io/name": "image-importer", tasksv1.LabelImageID: "orphan", tasksv1.LabelTaskName: "ttl-gone",
		}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: importerContainer, Image: testImporterConfig().Image}}},
	}
	g.Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	now := time.Now()
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: importerContainer, Image: testImporterConfig().Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", Message: resultJSON(t, importresult.Result{ImageID: "orphan", Size: 512}),
			StartedAt: metav1.NewTime(now.Add(-time.Second)), FinishedAt: metav1.NewTime(now),
		}},
	}}})
	base := img.DeepCopy()
	img.Status.Status, img.Status.ImportTask = tasksv1.ImageImporting, "ttl-gone"
	img.Status.UpdatedAt = &metav1.Time{Time: now}
	g.Expect(k8sClient.Status().Patch(ctx, img, client.MergeFrom(base))).To(Succeed())

	g.Eventually(func() []batchv1.Job { return cleanupJobsOf(t, ns) }, wait).Should(HaveLen(1))
	free := cleanupJobsOf(t, ns)[0]
	g.Expect(free.Spec.Template.Spec.Containers[0].Args).To(Equal([]string{"remove", "--dest=" + storeMountPath, "--image-id=orphan"}))
	g.Expect(waitForImage(t, ns, "orphan", tasksv1.ImageImporting).Status.Location).To(BeEmpty())
	completeJob(t, &free)

	got := waitForImage(t, ns, "orphan", tasksv1.ImageKilled)
	ready := meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady)
	g.Expect(ready.Reason).To(Equal(tasksv1.ReasonImportTaskDeleted))
	g.Expect(ready.Message).To(Equal("Task ttl-gone succeeded but was deleted before the image recorded its data, " +
		"which is lost with the task; Job " + free.Name + " removed what it wrote. Import the image again"))
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, got.UID) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", tasksv1.ReasonImportTaskDeleted))))
}

func TestCleanupTargetOf(t *testing.T) {
	img := func(location string) *tasksv1.Image {
		return &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "id"},
			Status: tasksv1.ImageStatus{Location: location}}
	}
	for _, tc := range []struct {
		location string
		want     cleanupTarget
		refused  string
	}{
		{"", cleanupTarget{"image-store", "id"}, ""},
		{"pvc://ns/image-store/id", cleanupTarget{"image-store", "id"}, ""},
		{"pvc://ns/other/another-id", cleanupTarget{"other", "another-id"}, ""},
		{"pvc://other-ns/image-store/id", cleanupTarget{}, `location "pvc://other-ns/image-store/id" is in namespace "other-ns", not in the image's own (ns): its data is not this image's to remove`},
		{"pvc://ns/image-store/.hidden", cleanupTarget{}, `location "pvc://ns/image-store/.hidden" names no valid image file`},
		{"pvc://ns/Bad_Claim/id", cleanupTarget{}, `location "pvc://ns/Bad_Claim/id" names no valid claim`},
		{"pvc://ns/image-store/a/b", cleanupTarget{}, `location "pvc://ns/image-store/a/b" is not a file of a store (pvc://<namespace>/<claim>/<id>)`},
		{"file:///var/lib/glance/images/id", cleanupTarget{}, `location "file:///var/lib/glance/images/id" is not a file of a store (pvc://<namespace>/<claim>/<id>)`},
	} {
		got, refused := cleanupTargetOf(img(tc.location), "image-store")
		if got != tc.want || refused != tc.refused {
			t.Errorf("%q: got %+v, %q; want %+v, %q", tc.location, got, refused, tc.want, tc.refused)
		}
	}
}
