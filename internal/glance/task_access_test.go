package glance

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Where namespaces map to projects, a task's owner is its namespace's
// project, as an Image's is: the owner annotation, which whoever may edit
// ImageImportTasks in the namespace may write, does not hand the task to
// another project.
func TestTaskOwnershipFollowsTheNamespace(t *testing.T) {
	suffix := uniq()
	prefix := "town" + suffix + "-"
	a, b := "a"+suffix, "b"+suffix
	for _, p := range []string{a, b} {
		NewWithT(t).Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + p}})).To(Succeed())
		t.Cleanup(func() { deleteTasksAndImages(t, prefix+p) })
	}
	expectAPlantedTaskStaysItsNamespaces(t, NamespaceTemplate(prefix+"{project}"), a, b, prefix+a)
}

// With namespaces labelled by project, too, the label decides the owner.
func TestTaskOwnershipFollowsTheNamespaceLabel(t *testing.T) {
	a, b := "lab"+uniq(), "lab"+uniq()
	var nsA string
	for _, p := range []string{a, b} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-label-", Labels: map[string]string{LabelProjectID: p}}}
		NewWithT(t).Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
		t.Cleanup(func() { deleteTasksAndImages(t, ns.Name) })
		if p == a {
			nsA = ns.Name
		}
	}
	expectAPlantedTaskStaysItsNamespaces(t, LabelledNamespace{Reader: k8sClient}, a, b, nsA)
}

// expectAPlantedTaskStaysItsNamespaces has a tenant of project a, with
// kubectl edit on tasks in its namespace nsA, annotate its task as b's:
// b neither reads nor lists it, and it stays a's.
func expectAPlantedTaskStaysItsNamespaces(t *testing.T, namespaces Namespaces, a, b, nsA string) {
	g := NewWithT(t)
	ctx := context.Background()
	s := newShimWith(t, PolicyMember, namespaces)
	memberA, memberB, admin := "u:"+a+":member", "u:"+b+":member", "root:"+a+":admin"

	r := s.do(t, "POST", "/v2/tasks", memberA, validBody)
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	task := taskByID(t, id)
	g.Expect(task.Namespace).To(Equal(nsA))
	before := task.DeepCopy()
	task.Annotations[annotationOwner] = b
	g.Expect(k8sClient.Patch(ctx, task, client.MergeFrom(before))).To(Succeed())
	g.Eventually(func() string {
		var cached tasksv1.ImageImportTask
		taskCache.Get(ctx, client.ObjectKeyFromObject(task), &cached)
		return cached.Annotations[annotationOwner]
	}).Should(Equal(b), "the cache has the planted owner")

	g.Expect(s.do(t, "GET", "/v2/tasks/"+id, memberB, "").status).To(Equal(404))
	r = s.do(t, "GET", "/v2/tasks", memberB, "")
	g.Expect(r.status).To(Equal(200), r.body)
	g.Expect(r.body).NotTo(ContainSubstring(id), "b does not own what a planted")

	r = s.do(t, "GET", "/v2/tasks/"+id, memberA, "")
	g.Expect(r.status).To(Equal(200), r.body)
	g.Expect(r.json["owner"]).To(Equal(a), "the namespace's project, not the annotation")
	r = s.do(t, "GET", "/v2/tasks", memberA, "")
	g.Expect(r.body).To(ContainSubstring(id))
	g.Expect(r.body).NotTo(ContainSubstring(`"owner": "` + b + `"`))

	g.Expect(s.do(t, "GET", "/v2/tasks?owner="+b, admin, "").body).NotTo(ContainSubstring(id))
	g.Expect(s.do(t, "GET", "/v2/tasks?owner="+a, admin, "").body).To(ContainSubstring(id))
}

// deleteTasksAndImages deletes what a test left in a namespace: admins
// list every namespace's tasks and images.
func deleteTasksAndImages(t *testing.T, namespace string) {
	if err := k8sClient.DeleteAllOf(context.Background(), &tasksv1.ImageImportTask{}, client.InNamespace(namespace)); err != nil {
		t.Error(err)
	}
	deleteImages(t, namespace)
}
