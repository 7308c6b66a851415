package glance

import (
	"context"
	"net/http/httptest"
	"testing"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

// With --auth=kubernetes, a bearer token is checked with a TokenReview and
// access with a SubjectAccessReview: RBAC on imageimporttasks decides.
func TestKubernetesAuth(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "glance-k8s-"}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	t.Cleanup(func() { deleteImages(t, ns.Name) }) // a task makes its image
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "importer-user", Namespace: ns.Name}}
	g.Expect(k8sClient.Create(ctx, sa)).To(Succeed())
	clientset := kubernetes.NewForConfigOrDie(testCfg)
	tr, err := clientset.CoreV1().ServiceAccounts(ns.Name).CreateToken(ctx, sa.Name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	token := tr.Status.Token

	compiled, _ := urlpolicy.Compile(urlpolicy.Policy{AllowedSchemes: []string{"http"}, AllowedHosts: []string{"127.0.0.1"}})
	srv := &Server{
		Cache: taskCache, Writer: k8sClient,
		Auth:       &Kubernetes{Client: k8sClient, DefaultProject: ns.Name},
		Namespaces: NamespaceTemplate("{project}"),
		URLPolicy:  compiled,
		Log:        ctrl.Log.WithName("shim"),
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s := &shim{Server: ts, namespace: ns.Name}

	g.Expect(s.do(t, "GET", "/v2/tasks", "", "").status).To(Equal(401), "no token")
	g.Expect(s.do(t, "GET", "/v2/tasks", "not-a-token", "").status).To(Equal(401), "a token the API server does not know")
	g.Expect(s.do(t, "POST", "/v2/tasks", token, validBody).status).To(Equal(403), "no RBAC yet")

	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "tasks", Namespace: ns.Name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"tasks.imageimport.io"}, Resources: []string{"imageimporttasks"},
			Verbs: []string{"create", "get", "list"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tasks", Namespace: ns.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "tasks"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns.Name}},
	}
	g.Expect(k8sClient.Create(ctx, role)).To(Succeed())
	g.Expect(k8sClient.Create(ctx, binding)).To(Succeed())

	var id string
	g.Eventually(func() int {
		r := s.do(t, "POST", "/v2/tasks", token, validBody, "Authorization", "Bearer "+token)
		if r.status == 201 {
			id = r.json["id"].(string)
		}
		return r.status
	}).Should(Equal(201))
	g.Expect(taskByID(t, id).Namespace).To(Equal(ns.Name))
	g.Eventually(func() int { return s.do(t, "GET", "/v2/tasks/"+id, token, "").status }).Should(Equal(200))
	r := s.do(t, "GET", "/v2/tasks", token, "")
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.json["tasks"]).To(HaveLen(1), "a namespace user sees its project's tasks only")
}
