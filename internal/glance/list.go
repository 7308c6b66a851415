package glance

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

const (
	defaultLimit = 25   // Glance's limit_param_default
	maxLimit     = 1000 // Glance's api_limit_max
)

// sortKeys are the Task columns Glance sorts by.
var sortKeys = []string{"id", "type", "status", "owner", "expires_at", "image_id", "request_id", "user_id",
	"created_at", "updated_at", "deleted_at", "deleted"}

// filterColumns are the Task columns a query parameter filters by equality.
var filterColumns = []string{"id", "owner", "image_id", "user_id", "request_id"}

var taskStatuses = []string{"pending", "processing", "success", "failure"}

// param is one query parameter, in request order.
type param struct{ key, value string }

func parseQuery(raw string) []param {
	var out []param
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		out = append(out, param{k, v})
	}
	return out
}

func lookup(params []param, key string) (string, bool) {
	value, found := "", false
	for _, p := range params {
		if p.key == key {
			value, found = p.value, true
		}
	}
	return value, found
}

// listQuery is a validated GET /v2/tasks.
type listQuery struct {
	params  []param
	sortKey string
	desc    bool
	marker  string
	limit   int
	filters map[string]string
}

// parseList validates the query in Glance's order: sort_dir, status, type,
// marker, limit, then sort_key.
func parseList(params []param) (*listQuery, *httpError) {
	q := &listQuery{params: params, sortKey: "created_at", desc: true, limit: defaultLimit, filters: map[string]string{}}
	bad := func(msg string) *httpError { return newError(http.StatusBadRequest, msg) }
	if dir, ok := lookup(params, "sort_dir"); ok {
		if dir != "asc" && dir != "desc" {
			return nil, bad("Invalid sort direction: " + dir)
		}
		q.desc = dir == "desc"
	}
	if v, ok := lookup(params, "status"); ok {
		if v != "" && !slices.Contains(taskStatuses, v) {
			return nil, bad("Invalid status value: " + v)
		}
		q.filters["status"] = v
	}
	if v, ok := lookup(params, "type"); ok {
		if v != "" && v != "import" {
			return nil, bad("Invalid type value: " + v)
		}
		q.filters["type"] = v
	}
	for _, col := range filterColumns {
		if v, ok := lookup(params, col); ok {
			q.filters[col] = v
		}
	}
	if m, ok := lookup(params, "marker"); ok {
		id, err := uuid.Parse(m)
		if err != nil {
			return nil, bad("Invalid marker format")
		}
		q.marker = id.String()
	}
	if l, ok := lookup(params, "limit"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(l))
		switch {
		case err != nil:
			return nil, bad("limit param must be an integer")
		case n < 0:
			return nil, bad("limit param must be positive")
		}
		q.limit = min(n, maxLimit)
	}
	if k, ok := lookup(params, "sort_key"); ok {
		if !slices.Contains(sortKeys, k) {
			return nil, bad("Sort key supplied was not valid.")
		}
		q.sortKey = k
	}
	return q, nil
}

// list is GET /v2/tasks.
func (s *Server) list(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
	ctx := r.Context()
	if e := s.allowed(ctx, id, "list"); e != nil {
		e.write(w, r)
		return
	}
	q, e := parseList(parseQuery(r.URL.RawQuery))
	if e != nil {
		e.write(w, r)
		return
	}
	var all tasksv1.ImageImportTaskList
	opts := []client.ListOption{}
	seesAll := s.Auth.SeesAll(ctx, id)
	if !seesAll {
		opts = append(opts, client.MatchingFields{indexOwner: id.ProjectID})
	}
	if err := s.Reader.List(ctx, &all, opts...); err != nil {
		s.internalError(w, r, err)
		return
	}
	tasks := make([]task, 0, len(all.Items))
	for i := range all.Items {
		if all.Items[i].Annotations[annotationOwner] != "" {
			tasks = append(tasks, taskOf(&all.Items[i]))
		}
	}
	sortTasks(tasks, q.sortKey, q.desc)
	start := 0
	if q.marker != "" {
		i := slices.IndexFunc(tasks, func(t task) bool { return t.id == q.marker })
		if i < 0 {
			if !seesAll && s.existsElsewhere(r, q.marker) {
				newError(http.StatusForbidden, "Forbidding request, task "+q.marker+" is not visible").write(w, r)
				return
			}
			newError(http.StatusBadRequest, "Task with the given id "+q.marker+" was not found").write(w, r)
			return
		}
		start = i + 1
	}
	page := []any{}
	var last string
	for _, t := range tasks[start:] {
		if len(page) == q.limit {
			break
		}
		if t.matches(q.filters) {
			page = append(page, t.stub())
			last = t.id
		}
	}
	body := object{{"tasks", page}, {"first", listLink(q.params, "")}, {"schema", "/v2/schemas/tasks"}}
	if len(page) > 0 && len(page) == q.limit {
		body = append(body, member{"next", listLink(q.params, last)})
	}
	s.writeJSON(w, http.StatusOK, encodePy(body, false))
}

func (s *Server) existsElsewhere(r *http.Request, taskID string) bool {
	var list tasksv1.ImageImportTaskList
	err := s.Reader.List(r.Context(), &list, client.MatchingFields{indexUID: taskID})
	return err == nil && len(list.Items) > 0
}

func (t task) matches(filters map[string]string) bool {
	for col, want := range filters {
		if got, _ := t.column(col); got != want {
			return false
		}
	}
	return true
}

// sortTasks orders as Glance's query: by the key, then created_at, then id,
// all in the same direction.
func sortTasks(tasks []task, key string, desc bool) {
	keys := []string{key}
	for _, k := range []string{"created_at", "id"} {
		if k != key {
			keys = append(keys, k)
		}
	}
	slices.SortStableFunc(tasks, func(a, b task) int {
		for _, k := range keys {
			x, _ := a.column(k)
			y, _ := b.column(k)
			if c := cmp.Compare(x, y); c != 0 {
				if desc {
					return -c
				}
				return c
			}
		}
		return 0
	})
}

// listLink is /v2/tasks with the request's parameters but marker, in their
// order, and marker last when given: Glance's first and next.
func listLink(params []param, marker string) string {
	var parts []string
	for _, p := range params {
		if p.key != "marker" {
			parts = append(parts, url.QueryEscape(p.key)+"="+url.QueryEscape(p.value))
		}
	}
	if marker != "" {
		parts = append(parts, "marker="+marker)
	}
	if len(parts) == 0 {
		return "/v2/tasks"
	}
	return "/v2/tasks?" + strings.Join(parts, "&")
}
