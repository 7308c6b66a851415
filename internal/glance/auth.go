package glance

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Identity is who calls, in Glance's terms.
type Identity struct {
	ProjectID string
	UserID    string
	Roles     []string
	// user is the Kubernetes user of a bearer token (kubernetes auth).
	user *authnv1.UserInfo
}

// Auth authenticates requests and decides access to the task endpoints.
type Auth interface {
	// Authenticate returns the caller, or a 401.
	Authenticate(r *http.Request) (*Identity, *httpError)
	// Allowed reports whether the caller may use the task endpoints
	// (verb: create, list or get) on the tasks of the namespace.
	Allowed(ctx context.Context, id *Identity, verb, namespace string) (bool, error)
	// SeesAll reports whether the caller sees every project's tasks.
	SeesAll(ctx context.Context, id *Identity) bool
}

// Policy is Glance's tasks_api_access: who may use the task endpoints.
type Policy string

const (
	PolicyAdmin  Policy = "admin"  // role:admin, Glance's default
	PolicyMember Policy = "member" // any authenticated caller with a project
)

// roleAuth decides with Keystone roles: Glance's policy.
type roleAuth struct {
	policy Policy
}

func (a roleAuth) isAdmin(id *Identity) bool { return slices.Contains(id.Roles, "admin") }

func (a roleAuth) Allowed(_ context.Context, id *Identity, _, _ string) (bool, error) {
	return a.isAdmin(id) || a.policy == PolicyMember, nil
}

func (a roleAuth) SeesAll(_ context.Context, id *Identity) bool { return a.isAdmin(id) }

// KeystoneHeaders trusts the headers keystonemiddleware sets, as Glance
// does behind it: deploy it only behind a proxy that sets them.
type KeystoneHeaders struct {
	roleAuth
	// WWWAuthenticateURI is keystonemiddleware's www_authenticate_uri.
	WWWAuthenticateURI string
}

// NewKeystoneHeaders returns the keystone-headers auth.
func NewKeystoneHeaders(policy Policy, wwwAuthenticateURI string) *KeystoneHeaders {
	return &KeystoneHeaders{roleAuth: roleAuth{policy}, WWWAuthenticateURI: wwwAuthenticateURI}
}

func (k *KeystoneHeaders) Authenticate(r *http.Request) (*Identity, *httpError) {
	h := r.Header
	if h.Get("X-Identity-Status") != "Confirmed" {
		e := unauthorized()
		e.headers = map[string]string{"WWW-Authenticate": fmt.Sprintf("Keystone uri=%q", k.WWWAuthenticateURI)}
		return nil, e
	}
	id := &Identity{
		ProjectID: firstNonEmpty(h.Get("X-Project-Id"), h.Get("X-Tenant-Id"), h.Get("X-Tenant")),
		UserID:    firstNonEmpty(h.Get("X-User-Id"), h.Get("X-User")),
	}
	for _, role := range strings.Split(h.Get("X-Roles"), ",") {
		if role = strings.ToLower(strings.TrimSpace(role)); role != "" {
			id.Roles = append(id.Roles, role)
		}
	}
	return id, nil
}

// NoAuth makes every caller an admin of one project: for local use only.
type NoAuth struct {
	roleAuth
	ProjectID string
}

// NewNoAuth returns the none auth.
func NewNoAuth(project string) *NoAuth {
	return &NoAuth{roleAuth: roleAuth{PolicyAdmin}, ProjectID: project}
}

func (n *NoAuth) Authenticate(r *http.Request) (*Identity, *httpError) {
	return &Identity{ProjectID: n.ProjectID, UserID: firstNonEmpty(r.Header.Get("X-User-Id"), "admin"), Roles: []string{"admin"}}, nil
}

// Kubernetes checks bearer tokens with a TokenReview and access with a
// SubjectAccessReview on imageimporttasks: Kubernetes RBAC decides. The
// project is the X-Project-Id header, or DefaultProject.
type Kubernetes struct {
	Client         client.Client
	DefaultProject string
}

func (k *Kubernetes) Authenticate(r *http.Request) (*Identity, *httpError) {
	token := r.Header.Get("X-Auth-Token")
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && token == "" {
		token = strings.TrimSpace(v)
	}
	if token == "" {
		return nil, unauthorized()
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}
	if err := k.Client.Create(r.Context(), review); err != nil || !review.Status.Authenticated {
		return nil, unauthorized()
	}
	u := review.Status.User
	return &Identity{
		ProjectID: firstNonEmpty(r.Header.Get("X-Project-Id"), r.Header.Get("X-Tenant-Id"), k.DefaultProject),
		UserID:    firstNonEmpty(u.UID, u.Username),
		user:      &u,
	}, nil
}

func (k *Kubernetes) Allowed(ctx context.Context, id *Identity, verb, namespace string) (bool, error) {
	return k.review(ctx, id, verb, namespace)
}

// SeesAll: a caller who may list tasks in every namespace is an admin.
func (k *Kubernetes) SeesAll(ctx context.Context, id *Identity) bool {
	ok, _ := k.review(ctx, id, "list", "")
	return ok
}

// AllowedImages asks RBAC whether the caller may use images (verb: get,
// list, create, update or delete) in the namespace.
func (k *Kubernetes) AllowedImages(ctx context.Context, id *Identity, verb, namespace string) (bool, error) {
	return k.reviewResource(ctx, id, verb, namespace, "images")
}

func (k *Kubernetes) review(ctx context.Context, id *Identity, verb, namespace string) (bool, error) {
	return k.reviewResource(ctx, id, verb, namespace, "imageimporttasks")
}

func (k *Kubernetes) reviewResource(ctx context.Context, id *Identity, verb, namespace, resource string) (bool, error) {
	extra := map[string]authzv1.ExtraValue{}
	for key, v := range id.user.Extra {
		extra[key] = authzv1.ExtraValue(v)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: id.user.Username, UID: id.user.UID, Groups: id.user.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: namespace, Verb: verb,
			Group: tasksv1.GroupVersion.Group, Version: tasksv1.GroupVersion.Version, Resource: resource,
		},
	}}
	if err := k.Client.Create(ctx, sar); err != nil {
		return false, fmt.Errorf("reviewing access: %w", err)
	}
	return sar.Status.Allowed, nil
}

func unauthorized() *httpError {
	return &httpError{code: http.StatusUnauthorized, explanation: unauthorizedText, noRequestID: true}
}

func forbidden() *httpError {
	return newError(http.StatusForbidden, "You are not authorized to complete tasks_api_access action.")
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
