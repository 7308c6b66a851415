package glance

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

const (
	jsonType  = "application/json"
	patchType = "application/openstack-images-v2.1-json-patch"
)

// uniq is a DNS-label-safe suffix of the test's own.
func uniq() string { return strings.ReplaceAll(uuid.NewString()[:13], "-", "") }

// getImage reads an Image from the API server.
func getImage(t *testing.T, namespace, name string) *tasksv1.Image {
	t.Helper()
	img := &tasksv1.Image{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// Glance's publicize_image is admin-only: a member can neither create a
// public image nor make one public (what real Glance answers, byte for
// byte); nor, unlike Glance's legacy import, ask a task for one.
func TestPublicizeImageIsAdminOnly(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyMember)
	member := "u:pub" + uniq() + ":member"
	const refused = "You are not authorized to complete publicize_image action."

	r := s.do(t, "POST", "/v2/images", member, `{"name":"p","visibility":"public"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(403))
	g.Expect(r.body).To(ContainSubstring(refused))

	r = s.do(t, "POST", "/v2/images", member, `{"name":"p"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	for _, op := range []string{"replace", "add"} {
		r = s.do(t, "PATCH", "/v2/images/"+id, member, `[{"op":"`+op+`","path":"/visibility","value":"public"}]`, "Content-Type", patchType)
		g.Expect(r.status).To(Equal(403), op)
		g.Expect(r.body).To(ContainSubstring(refused), op)
	}
	g.Expect(getImage(t, s.namespace, id).Spec.Visibility).To(BeEquivalentTo("shared"))

	r = s.do(t, "POST", "/v2/images", "u:pub"+uniq()+":admin", `{"name":"p","visibility":"public"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), "an admin publishes: %s", r.body)

	publicTask := strings.Replace(validBody, `"name":"cirros"`, `"name":"cirros","visibility":"public"`, 1)
	r = s.do(t, "POST", "/v2/tasks", member, publicTask)
	g.Expect(r.status).To(Equal(403), "tasks_api_access lets members in, publicize_image does not")
	g.Expect(r.body).To(ContainSubstring(refused))
	g.Expect(s.do(t, "POST", "/v2/tasks", member, validBody).status).To(Equal(201))
}

// A v2.1 "add" of /owner is guarded as "replace" is: a member cannot give
// its image to another project (real Glance: 403, and the image keeps its
// owner); adding its own project changes nothing and is allowed.
func TestAddOwnerCannotGiveAnImageAway(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	project := "own" + uniq()
	member := "u:" + project + ":member"
	r := s.do(t, "POST", "/v2/images", member, `{"name":"mine"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)

	r = s.do(t, "PATCH", "/v2/images/"+id, member, `[{"op":"add","path":"/owner","value":"someone-else"}]`, "Content-Type", patchType)
	g.Expect(r.status).To(Equal(403), r.body)
	g.Expect(r.body).To(ContainSubstring("Forbidding request, image " + id + " not visible"))
	r = s.do(t, "PATCH", "/v2/images/"+id, member, `[{"op":"replace","path":"/owner","value":"someone-else"}]`, "Content-Type", patchType)
	g.Expect(r.status).To(Equal(403), r.body)
	g.Expect(r.body).To(ContainSubstring("Owner can't be updated by non admin."))
	g.Expect(getImage(t, s.namespace, id).Annotations[annotationOwner]).To(Equal(project))

	r = s.do(t, "PATCH", "/v2/images/"+id, member, `[{"op":"add","path":"/owner","value":"`+project+`"}]`, "Content-Type", patchType)
	g.Expect(r.status).To(Equal(200), r.body)
	r = s.do(t, "PATCH", "/v2/images/"+id, "u:"+project+":admin", `[{"op":"add","path":"/owner","value":"someone-else"}]`, "Content-Type", patchType)
	g.Expect(r.status).To(Equal(200), "an admin may: %s", r.body)
	g.Expect(r.json["owner"]).To(Equal("someone-else"))
}

// Where namespaces map to projects, an Image's owner is its namespace's
// project: the owner annotation, which whoever may edit Images in the
// namespace may write, is not trusted. And of Images that share an id,
// the oldest is the image (the caller's own namespace first).
func TestOwnershipFollowsTheNamespace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	suffix := uniq()
	prefix := "own" + suffix + "-"
	a, b := "a"+suffix, "b"+suffix
	for _, p := range []string{a, b} {
		g.Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + p}})).To(Succeed())
		t.Cleanup(func() { deleteImages(t, prefix+p) })
	}
	s := newShimWith(t, PolicyAdmin, NamespaceTemplate(prefix+"{project}"))
	memberA, memberB, admin := "u:"+a+":member", "u:"+b+":member", "u:admin"+suffix+":admin"

	r := s.do(t, "POST", "/v2/images", memberB, `{"name":"original"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	original := r.json["id"].(string)
	g.Expect(getImage(t, prefix+b, original).Namespace).To(Equal(prefix + b))

	// A tenant of project a, with kubectl in its own namespace, plants an
	// image "owned" by b, and a later copy of b's image (creation times
	// count in seconds).
	time.Sleep(1100 * time.Millisecond)
	planted := uuid.NewString()
	for name, spec := range map[string]tasksv1.ImageSpec{planted: {Name: "planted"}, original: {Name: "impostor", Visibility: "public"}} {
		img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: prefix + a, Name: name,
			Annotations: map[string]string{annotationOwner: b}}, Spec: spec}
		g.Expect(k8sClient.Create(ctx, img)).To(Succeed())
	}
	g.Eventually(func() int {
		var list tasksv1.ImageList
		taskCache.List(ctx, &list, client.InNamespace(prefix+a))
		return len(list.Items)
	}).Should(Equal(2))

	r = s.do(t, "GET", "/v2/images", memberB, "")
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.body).NotTo(ContainSubstring(planted), "b does not own what a planted")
	g.Expect(strings.Count(r.body, `"id": "`+original+`"`)).To(Equal(1), "one image per id: %s", r.body)
	g.Expect(r.body).To(ContainSubstring(`"original"`))
	g.Expect(s.do(t, "GET", "/v2/images/"+planted, memberB, "").status).To(Equal(404))
	g.Expect(s.do(t, "DELETE", "/v2/images/"+planted, memberB, "").status).To(Equal(404))
	g.Expect(getImage(t, prefix+a, planted).DeletionTimestamp).To(BeNil())

	r = s.do(t, "GET", "/v2/images/"+planted, memberA, "")
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.json["owner"]).To(Equal(a), "the namespace's project, not the annotation")

	// Anyone else gets the oldest image of the id, wherever they look.
	r = s.do(t, "GET", "/v2/images/"+original, admin, "")
	g.Expect(r.json["name"]).To(Equal("original"))
	g.Expect(r.json["owner"]).To(Equal(b))
	r = s.do(t, "GET", "/v2/images?visibility=all", admin, "")
	g.Expect(strings.Count(r.body, `"id": "`+original+`"`)).To(Equal(1), r.body)
	g.Expect(r.body).NotTo(ContainSubstring("impostor"))
	r = s.do(t, "GET", "/v2/images", "u:c"+suffix+":member", "")
	g.Expect(r.body).NotTo(ContainSubstring(original), "the public copy does not stand in for b's shared original")

	// An image does not change namespace: an admin cannot give a's to b.
	r = s.do(t, "PATCH", "/v2/images/"+planted, admin, `[{"op":"replace","path":"/owner","value":"`+b+`"}]`, "Content-Type", patchType)
	g.Expect(r.status).To(Equal(403), r.body)
	// An admin creating an image for b puts it in b's namespace.
	r = s.do(t, "POST", "/v2/images", admin, `{"name":"for-b","owner":"`+b+`"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	g.Expect(getImage(t, prefix+b, r.json["id"].(string)).Spec.Name).To(Equal("for-b"))
}

// GET /v2/images/{id}/tasks asks RBAC about images, as every other images
// endpoint does with --auth=kubernetes.
func TestImageTasksNeedImagesRBAC(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-imgrbac-"}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { deleteImages(t, ns.Name) })
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "tasks-only", Namespace: ns.Name}}
	g.Expect(k8sClient.Create(ctx, sa)).To(Succeed())
	tr, err := kubernetes.NewForConfigOrDie(testCfg).CoreV1().ServiceAccounts(ns.Name).CreateToken(ctx, sa.Name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	token := tr.Status.Token
	bind(t, ns.Name, "tasks", []string{"imageimporttasks"}, rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns.Name})

	id := uuid.NewString()
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: id, Annotations: map[string]string{annotationOwner: ns.Name}}}
	g.Expect(k8sClient.Create(ctx, img)).To(Succeed())
	s := &shim{Server: newKubernetesShim(t, ns.Name), namespace: ns.Name}

	r := s.do(t, "GET", "/v2/images/"+id+"/tasks", token, "")
	g.Expect(r.status).To(Equal(403), "RBAC on tasks only: %s", r.body)
	g.Expect(r.body).To(ContainSubstring("You are not authorized to complete get_image action."))

	bind(t, ns.Name, "images", []string{"images"}, rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns.Name})
	g.Eventually(func() int { return s.do(t, "GET", "/v2/images/"+id+"/tasks", token, "").status }).Should(Equal(200))
}

// newKubernetesShim serves a shim with --auth=kubernetes whose callers'
// project is the namespace.
func newKubernetesShim(t *testing.T, namespace string) *httptest.Server {
	compiled, err := urlpolicy.Compile(urlpolicy.Policy{AllowedSchemes: []string{"http"}, AllowedHosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(&Server{
		Cache: taskCache, Writer: k8sClient, APIReader: k8sClient,
		Auth:       &Kubernetes{Client: k8sClient, DefaultProject: namespace},
		Namespaces: NamespaceTemplate("{project}"),
		URLPolicy:  compiled,
		Log:        ctrl.Log.WithName("shim"),
	})
	t.Cleanup(ts.Close)
	return ts
}

// bind grants the subject create, get, list, update and delete on the
// resources of the API group in the namespace.
func bind(t *testing.T, namespace, name string, resources []string, subject rbacv1.Subject) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"tasks.imageimport.io"}, Resources: resources,
			Verbs: []string{"create", "get", "list", "watch", "update", "patch", "delete"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	}
	for _, o := range []client.Object{role, binding} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// bindEdit binds the users to the built-in edit role in the namespace, with
// what config/rbac aggregates into it (envtest runs no aggregation
// controller: the users are bound to the aggregated roles themselves).
func bindEdit(t *testing.T, namespace string, users ...string) {
	t.Helper()
	ctx := context.Background()
	roles := []string{"edit"}
	for _, file := range []string{"image_editor_role.yaml", "imageimporttask_editor_role.yaml"} {
		role := &rbacv1.ClusterRole{}
		data, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", file))
		if err == nil {
			err = yaml.Unmarshal(data, role)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Create(ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		roles = append(roles, role.Name)
	}
	var subjects []rbacv1.Subject
	for _, u := range users {
		subjects = append(subjects, rbacv1.Subject{Kind: "User", Name: u})
	}
	for _, role := range roles {
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: namespace},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects:   subjects,
		}
		if err := k8sClient.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
	}
}

// The admission policy config/policy/public_images.yaml: a user with the
// edit role in its namespace (Images and tasks included) cannot make an
// image public, neither an Image nor a task's imageProperties; a member of
// tasks.imageimport.io:image-publishers can; the shim's service account
// too.
func TestPublishingNeedsAPublisherAtAdmission(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-publish-"}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { deleteImages(t, ns.Name) })
	shimSA := "system:serviceaccount:image-import-system:image-import-glance-shim"
	bindEdit(t, ns.Name, "alice", "bob", shimSA)
	as := func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(testCfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
		c, err := client.New(cfg, client.Options{Scheme: testScheme})
		g.Expect(err).NotTo(HaveOccurred())
		return c
	}
	image := func(visibility string) *tasksv1.Image {
		return &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: uuid.NewString()},
			Spec: tasksv1.ImageSpec{Visibility: tasksv1.Visibility(visibility)}}
	}
	task := func(visibility string) *tasksv1.ImageImportTask {
		return &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "t-" + uniq()},
			Spec: tasksv1.ImageImportTaskSpec{Type: tasksv1.TaskTypeImport, Input: tasksv1.TaskInput{
				ImportFrom: "http://127.0.0.1:1/x.qcow2", ImportFromFormat: "qcow2",
				ImageProperties: &tasksv1.ImageProperties{DiskFormat: "raw", ContainerFormat: "bare", Visibility: tasksv1.Visibility(visibility)}}}}
	}
	alice := as("alice")
	g.Eventually(func() error { return alice.Create(ctx, image("public")) }, 10*time.Second).Should(
		MatchError(ContainSubstring("only image publishers (group tasks.imageimport.io:image-publishers) may make an image public: spec.visibility may not be public")),
		"the policy takes effect")
	err := alice.Create(ctx, task("public"))
	g.Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
	g.Expect(err).To(MatchError(ContainSubstring("spec.input.imageProperties.visibility may not be public")))

	mine := image("private")
	g.Expect(alice.Create(ctx, mine)).To(Succeed())
	patch := client.MergeFrom(mine.DeepCopy())
	mine.Spec.Visibility = "public"
	g.Expect(alice.Patch(ctx, mine, patch)).To(MatchError(ContainSubstring("may not be public")))
	g.Expect(alice.Create(ctx, task("shared"))).To(Succeed())

	bob := as("bob", "tasks.imageimport.io:image-publishers")
	published := image("public")
	g.Expect(bob.Create(ctx, published)).To(Succeed())
	g.Expect(bob.Create(ctx, task("public"))).To(Succeed())
	g.Expect(as(shimSA, "system:serviceaccounts").Create(ctx, image("public"))).To(Succeed())

	// Editing an image that is public already is not publishing it.
	patch = client.MergeFrom(published.DeepCopy())
	published.Spec.Tags = []string{"edited"}
	g.Expect(alice.Patch(ctx, published, patch)).To(Succeed())
}

// POST /v2/tasks makes the queued image its import fills, owned by the
// caller's project, as Glance's legacy import does: the member who made
// the task reads the image by the task's result id. A failed import kills
// it, and Glance has deleted it by then: the shim shows it as deleted. A
// task Glance fails before it runs makes no image.
func TestATaskMakesItsImage(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s := newShim(t, PolicyMember)
	project := "legacy" + uniq()
	member := "u:" + project + ":member"
	r := s.do(t, "POST", "/v2/tasks", member, validBody)
	g.Expect(r.status).To(Equal(201), r.body)
	task := taskByID(t, r.json["id"].(string))
	g.Expect(task.Spec.Image).NotTo(BeNil(), "the task fills the shim's image")
	g.Expect(task.Spec.Image.OnFailure).To(Equal(tasksv1.ImageFailureKilled))
	id := task.Spec.Image.Name
	g.Expect(task.Labels).To(HaveKeyWithValue(LabelImageID, id))
	img := getImage(t, s.namespace, id)
	g.Expect(img.Spec.Name).To(Equal("cirros"))
	g.Expect(img.Spec.DiskFormat).To(BeEquivalentTo("raw"))
	g.Expect(img.Spec.Properties).To(HaveKeyWithValue("os_distro", "cirros"))

	r = s.do(t, "GET", "/v2/images/"+id, member, "")
	g.Expect(r.status).To(Equal(200), r.body)
	g.Expect(r.json["owner"]).To(Equal(project))
	g.Expect(r.json["status"]).To(Equal("queued"))
	g.Expect(r.body).To(ContainSubstring(`"os_distro": "cirros", "hw_qemu_guest_agent": "true", "name": "cirros"`), "extra properties in the posted order")
	g.Expect(r.json).NotTo(HaveKey("os_glance_import_task"), "no interoperable import")
	g.Expect(s.do(t, "GET", "/v2/images", member, "").body).To(ContainSubstring(id))

	img.Status.Status = tasksv1.ImageKilled
	g.Expect(k8sClient.Status().Update(ctx, img)).To(Succeed())
	g.Eventually(func() string { return s.do(t, "GET", "/v2/images", member, "").body }).ShouldNot(ContainSubstring(id))
	g.Expect(s.do(t, "GET", "/v2/images/"+id, member, "").status).To(Equal(404), "Glance deletes the image of a failed task")

	var before tasksv1.ImageList
	g.Expect(k8sClient.List(ctx, &before, client.InNamespace(s.namespace))).To(Succeed())
	r = s.do(t, "POST", "/v2/tasks", member, `{"type":"import","input":{"import_from":"http://127.0.0.1/x","import_from_format":"qcow2"}}`)
	g.Expect(r.status).To(Equal(201), r.body)
	g.Expect(taskByID(t, r.json["id"].(string)).Spec.Image).To(BeNil())
	var after tasksv1.ImageList
	g.Expect(k8sClient.List(ctx, &after, client.InNamespace(s.namespace))).To(Succeed())
	g.Expect(after.Items).To(HaveLen(len(before.Items)), "a task recorded as failed makes no image")
}

// An importing image names the task that claimed it as its import task,
// not a task created since under the same name (a GitOps replace), which
// waits for the first import to be cancelled.
func TestImportTaskIsTheClaimant(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s := newShim(t, PolicyAdmin)
	const token = "gopher:gophers:member"
	r := s.do(t, "POST", "/v2/images", token, `{"name":"claimed","disk_format":"raw","container_format":"bare"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	task := taskByID(t, s.createTask(t, "gophers")) // the task of the name, made since
	img := getImage(t, s.namespace, id)
	img.Status.Status, img.Status.ImportTask, img.Status.ImportTaskUID = tasksv1.ImageImporting, task.Name, "uid-of-the-deleted-task"
	g.Expect(k8sClient.Status().Update(ctx, img)).To(Succeed())
	r = s.do(t, "GET", "/v2/images/"+id, token, "")
	g.Expect(r.status).To(Equal(200), r.body)
	g.Expect(r.json).To(HaveKeyWithValue("os_glance_import_task", "uid-of-the-deleted-task"))
}

// HEAD /v2/images/{id}/file is a 405 (real Glance: Allow "GET, PUT"; the
// shim takes no uploads), with no body, whatever the image holds.
func TestHeadOfImageDataIs405(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	r := s.do(t, "POST", "/v2/images", "u:head:member", `{"name":"h","disk_format":"raw","container_format":"bare"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	r = s.do(t, "HEAD", "/v2/images/"+r.json["id"].(string)+"/file", "u:head:member", "")
	g.Expect(r.status).To(Equal(405))
	g.Expect(r.header.Get("Allow")).To(Equal("GET"))
	g.Expect(r.body).To(BeEmpty())
}

// With namespaces labelled by project, too, the label decides the owner.
func TestOwnershipFollowsTheNamespaceLabel(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	project, other := "lab"+uniq(), "lab"+uniq()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-label-", Labels: map[string]string{LabelProjectID: project}}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { deleteImages(t, ns.Name) })
	s := newShimWith(t, PolicyAdmin, LabelledNamespace{Reader: k8sClient})
	id := uuid.NewString()
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: id, Annotations: map[string]string{annotationOwner: other}}}
	g.Expect(k8sClient.Create(ctx, img)).To(Succeed())

	g.Eventually(func() int { return s.do(t, "GET", "/v2/images/"+id, "u:"+project+":member", "").status }).Should(Equal(200))
	r := s.do(t, "GET", "/v2/images/"+id, "u:"+project+":member", "")
	g.Expect(r.json["owner"]).To(Equal(project))
	g.Expect(s.do(t, "GET", "/v2/images/"+id, "u:"+other+":member", "").status).To(Equal(404))
	g.Expect(s.do(t, "GET", "/v2/images", "u:"+other+":member", "").body).NotTo(ContainSubstring(id))
}
