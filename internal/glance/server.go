// Package glance is the Glance-compatible shim: it serves the Glance v2
// tasks API, exactly as real Glance does, on top of ImageImportTask
// resources. It keeps no state of its own: a POST creates a task resource,
// and reads come from a controller-runtime cache indexed by UID and owner.
package glance

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

// Server serves the Glance v2 tasks API.
type Server struct {
	// Cache holds the tasks, with the indexes of AddIndexes.
	Cache cache.Cache
	// Writer creates tasks and images.
	Writer client.Writer
	// APIReader reads an image fresh from the API server (nil: the cache),
	// so that a client reads what it has just written.
	APIReader client.Reader
	// ImageData reads image data for GET /v2/images/{id}/file; nil: no
	// data backend, and downloads are refused.
	ImageData ImageData
	// WebDownloadFailure is what a failed web-download leaves its image
	// in: Queued as in Glance, or Killed to fail fast.
	WebDownloadFailure tasksv1.ImageFailurePolicy
	// ConversionFormat is Glance's [image_conversion] output_format: when
	// set, web-download imports are converted to it and the image's
	// disk_format becomes it, as with Glance's image_conversion import
	// plugin; empty stores the data in the image's disk_format.
	ConversionFormat tasksv1.DiskFormat
	Auth             Auth
	Namespaces       Namespaces
	// URLPolicy checks import_from at create time, as Glance's
	// [import_filtering_opts].
	URLPolicy *urlpolicy.Compiled
	// Resolve looks a host name up, as Glance requires import_from's host
	// to resolve; nil uses the system resolver.
	Resolve func(ctx context.Context, host string) error
	Log     logr.Logger
}

// Index names.
const (
	indexUID   = "metadata.uid"
	indexOwner = "glance.owner"
)

// AddIndexes adds the cache indexes the shim reads by.
func AddIndexes(ctx context.Context, indexer cache.Cache) error {
	if err := indexer.IndexField(ctx, &tasksv1.ImageImportTask{}, indexUID, func(o client.Object) []string {
		return []string{string(o.GetUID())}
	}); err != nil {
		return err
	}
	if err := indexer.IndexField(ctx, &tasksv1.ImageImportTask{}, indexOwner, func(o client.Object) []string {
		if owner := o.GetAnnotations()[annotationOwner]; owner != "" {
			return []string{owner}
		}
		return nil
	}); err != nil {
		return err
	}
	return indexer.IndexField(ctx, &tasksv1.Image{}, indexImageName, func(o client.Object) []string {
		return []string{o.GetName()}
	})
}

// versioned matches /v2/..., /v2.1/..., /v2.17/...: Glance's version
// negotiation maps them all to /v2.
var versioned = regexp.MustCompile(`^/v2(\.\d+)?(/.*)?$`)

type route struct {
	allow   string
	methods map[string]func(w http.ResponseWriter, r *http.Request, id *Identity, arg string)
	open    bool // schemas: any authenticated caller
}

// ServeHTTP routes a request as Glance's router does, with its 405s.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := versioned.FindStringSubmatch(r.URL.Path)
	if m == nil {
		if r.URL.Path == "/versions" && r.Method == http.MethodGet {
			s.writeJSON(w, http.StatusOK, versions(r))
			return
		}
		s.writeJSON(w, http.StatusMultipleChoices, versions(r)) // "/", "/v1/...": choose a version
		return
	}
	path := m[2]
	rt, arg := s.match(path)
	id, authErr := s.Auth.Authenticate(r)
	if authErr != nil {
		authErr.write(w, r)
		return
	}
	reqID := requestID(r)
	w.Header().Set("X-Openstack-Request-Id", reqID)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, reqID))
	if rt == nil {
		newError(http.StatusNotFound, notFoundText).write(w, r)
		return
	}
	handler, ok := rt.methods[r.Method]
	if !ok {
		(&httpError{code: http.StatusMethodNotAllowed, template: methodNotAllowed, allow: rt.allow}).write(w, r)
		return
	}
	handler(w, r, id, arg)
}

type handlerFunc = func(http.ResponseWriter, *http.Request, *Identity, string)

func (s *Server) match(path string) (*route, string) {
	switch {
	case path == "/tasks":
		return &route{allow: "GET, POST", methods: map[string]func(http.ResponseWriter, *http.Request, *Identity, string){
			http.MethodGet: s.list, http.MethodPost: s.create,
		}}, ""
	case strings.HasPrefix(path, "/tasks/") && len(path) > len("/tasks/") && !strings.Contains(path[len("/tasks/"):], "/"):
		return &route{allow: "GET, DELETE", methods: map[string]func(http.ResponseWriter, *http.Request, *Identity, string){
			http.MethodGet: s.show, http.MethodDelete: s.delete,
		}}, path[len("/tasks/"):]
	case strings.HasPrefix(path, "/images") || path == "/info/import":
		return s.matchImages(path)
	case path == "/schemas/task" || path == "/schemas/tasks" || path == "/schemas/image" || path == "/schemas/images":
		doc := map[string]string{"/schemas/task": taskSchema, "/schemas/tasks": tasksSchema, "/schemas/image": imageSchema, "/schemas/images": imagesSchema}[path]
		return &route{allow: "GET", methods: map[string]func(http.ResponseWriter, *http.Request, *Identity, string){
			http.MethodGet: func(w http.ResponseWriter, _ *http.Request, _ *Identity, _ string) {
				s.writeJSON(w, http.StatusOK, []byte(doc))
			},
		}}, ""
	}
	return nil, ""
}

// requestID is the caller's X-Openstack-Request-ID, or a new one, with
// Glance's "req-" prefix.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Openstack-Request-Id"); v != "" && len(v) <= 64 {
		if !strings.HasPrefix(v, "req-") {
			v = "req-" + v
		}
		return v
	}
	return "req-" + uuid.NewString()
}

type requestIDKey struct{}

// requestIDOf is the request id of the request being served.
func requestIDOf(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// allowed applies tasks_api_access for a verb on the project's namespace.
func (s *Server) allowed(ctx context.Context, id *Identity, verb string) *httpError {
	ns, err := s.namespaceOf(ctx, id)
	if err != nil {
		return forbidden()
	}
	ok, err := s.Auth.Allowed(ctx, id, verb, ns)
	if err != nil {
		s.Log.Error(err, "Access review failed")
		return newError(http.StatusInternalServerError, serverErrorText)
	}
	if !ok {
		return forbidden()
	}
	return nil
}

func (s *Server) namespaceOf(ctx context.Context, id *Identity) (string, error) {
	if id.ProjectID == "" {
		return "", errNoProject
	}
	return s.Namespaces.For(ctx, id.ProjectID)
}

type shimError string

func (e shimError) Error() string { return string(e) }

const errNoProject = shimError("the caller has no project")

func (s *Server) writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// show is GET /v2/tasks/{id}.
func (s *Server) show(w http.ResponseWriter, r *http.Request, id *Identity, taskID string) {
	if e := s.allowed(r.Context(), id, "get"); e != nil {
		e.write(w, r)
		return
	}
	t, owner, err := s.find(r.Context(), id, taskID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if t == nil {
		newError(http.StatusNotFound, "Could not find task "+taskID).write(w, r)
		return
	}
	s.writeJSON(w, http.StatusOK, encodePy(taskOf(t, owner).detail(), false))
}

// delete is DELETE /v2/tasks/{id}: Glance never allows it.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
	if e := s.allowed(r.Context(), id, "get"); e != nil {
		e.write(w, r)
		return
	}
	(&httpError{code: http.StatusMethodNotAllowed, template: explanationOnly, allow: "GET",
		explanation: "This operation is currently not permitted on Glance Tasks. They are auto deleted after reaching the time based on their expires_at property."}).write(w, r)
}

// find returns the task with the id visible to the caller, and its owner,
// or nil. Task ids are UIDs, which the API server makes unique: no copy
// can share one.
func (s *Server) find(ctx context.Context, id *Identity, taskID string) (*tasksv1.ImageImportTask, string, error) {
	var list tasksv1.ImageImportTaskList
	if err := s.Cache.List(ctx, &list, client.MatchingFields{indexUID: strings.ToLower(taskID)}); err != nil {
		return nil, "", err
	}
	owners := s.owners()
	for i := range list.Items {
		t := &list.Items[i]
		owner, err := owners.taskOwner(ctx, t)
		if err != nil {
			return nil, "", err
		}
		// Only a task of another project costs an access review.
		if owner != "" && (owner == id.ProjectID || s.Auth.SeesAll(ctx, id)) {
			return t, owner, nil
		}
	}
	return nil, "", nil
}

func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.Log.Error(err, "Request failed", "method", r.Method, "path", r.URL.Path)
	newError(http.StatusInternalServerError, serverErrorText).write(w, r)
}

// candidateTasks are the tasks the caller may list, and maybe more: an
// admin's are every task, straight from the informer. A project's are in
// its namespace where namespaces map to projects (which decide the owner,
// resolveOwner); with one namespace for all, the owner index has them.
// The caller keeps those whose resolved owner is the project.
func (s *Server) candidateTasks(ctx context.Context, id *Identity, seesAll bool) ([]*tasksv1.ImageImportTask, error) {
	if seesAll {
		return s.cachedTasks(ctx)
	}
	ns, err := s.namespaceOf(ctx, id)
	if err != nil {
		return nil, nil // allowed has let in no caller without a namespace
	}
	_, mapped, err := s.Namespaces.ProjectOf(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("finding the project of namespace %s: %w", ns, err)
	}
	where := []client.ListOption{client.MatchingFields{indexOwner: id.ProjectID}, client.UnsafeDisableDeepCopy}
	if mapped {
		where = []client.ListOption{client.InNamespace(ns), client.UnsafeDisableDeepCopy}
	}
	var list tasksv1.ImageImportTaskList
	err = s.Cache.List(ctx, &list, where...)
	out := make([]*tasksv1.ImageImportTask, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, err
}

// cachedTasks lists the cached tasks without copying them: the list view
// reads every task, and a copy of 10,000 on each request would dominate it.
// The tasks are shared with the cache and must not be modified.
func (s *Server) cachedTasks(ctx context.Context) ([]*tasksv1.ImageImportTask, error) {
	informer, err := s.Cache.GetInformer(ctx, &tasksv1.ImageImportTask{})
	if err != nil {
		return nil, err
	}
	indexed, ok := informer.(interface{ GetIndexer() toolscache.Indexer })
	if !ok {
		var list tasksv1.ImageImportTaskList
		if err := s.Cache.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		out := make([]*tasksv1.ImageImportTask, len(list.Items))
		for i := range list.Items {
			out[i] = &list.Items[i]
		}
		return out, nil
	}
	objs := indexed.GetIndexer().List()
	out := make([]*tasksv1.ImageImportTask, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(*tasksv1.ImageImportTask); ok {
			out = append(out, t)
		}
	}
	return out, nil
}
