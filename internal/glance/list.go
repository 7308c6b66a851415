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
	seesAll := s.Auth.SeesAll(ctx, id)
	all, err := s.candidateTasks(ctx, id, seesAll)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	rows, owners := make([]row, 0, len(all)), s.owners()
	for _, t := range all {
		owner, err := owners.taskOwner(ctx, t)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		if owner != "" && (seesAll || owner == id.ProjectID) {
			rows = append(rows, newRow(t, owner, q.sortKey))
		}
	}
	var after *row
	if q.marker != "" {
		i := slices.IndexFunc(rows, func(r row) bool { return r.id == q.marker })
		if i < 0 {
			if !seesAll && s.existsElsewhere(r, q.marker) {
				newError(http.StatusForbidden, "Forbidding request, task "+q.marker+" is not visible").write(w, r)
				return
			}
			newError(http.StatusBadRequest, "Task with the given id "+q.marker+" was not found").write(w, r)
			return
		}
		after = &rows[i]
	}
	page := []any{}
	var last string
	for _, t := range firstAfter(rows, after, q) {
		page = append(page, t.stub())
		last = t.id
	}
	body := object{{"tasks", page}, {"first", listLink(q.params, "")}, {"schema", "/v2/schemas/tasks"}}
	if len(page) > 0 && len(page) == q.limit {
		body = append(body, member{"next", listLink(q.params, last)})
	}
	s.writeJSON(w, http.StatusOK, encodePy(body, false))
}

func (s *Server) existsElsewhere(r *http.Request, taskID string) bool {
	var list tasksv1.ImageImportTaskList
	err := s.Cache.List(r.Context(), &list, client.MatchingFields{indexUID: taskID})
	return err == nil && len(list.Items) > 0
}

func (t task) matches(filters map[string]string) bool {
	for col, want := range filters {
		if t.column(col) != want {
			return false
		}
	}
	return true
}

// row is a task with the values Glance orders by: the sort key, then
// created_at, then id, all in the same direction. Glance's created_at has
// sub-seconds; creationTimestamp has seconds only, so tasks created within
// a second are ordered by the creation time the shim recorded
// (annotationCreatedAt, whose fixed-width text sorts as the time does).
// The Glance view of a task is built only for what a page shows (or a
// filter needs).
type row struct {
	obj     *tasksv1.ImageImportTask
	owner   string // resolved (owners.taskOwner)
	id      string
	key     string
	keyTime int64 // for time keys
	created int64 // creationTimestamp, in seconds as Glance shows it
	precise string
}

func newRow(t *tasksv1.ImageImportTask, owner, sortKey string) row {
	r := row{obj: t, owner: owner, id: string(t.UID), created: t.CreationTimestamp.Unix(), precise: createdAt(t)}
	switch sortKey {
	case "created_at":
	case "id":
		r.key = r.id
	case "updated_at":
		r.keyTime = r.view().updatedAt.UnixNano()
	case "expires_at":
		if e := r.view().expiresAt; e != nil {
			r.keyTime = e.UnixNano()
		}
	default:
		r.key = r.view().column(sortKey)
	}
	return r
}

// view is the Glance view of the row's task.
func (r row) view() task { return taskOf(r.obj, r.owner) }

// createdAt is the precise creation time of a task: what the shim recorded,
// or creationTimestamp for a task created otherwise (kubectl, GitOps).
func createdAt(t *tasksv1.ImageImportTask) string {
	if v := t.Annotations[annotationCreatedAt]; len(v) == len(preciseTime) {
		return v
	}
	return t.CreationTimestamp.UTC().Format(preciseTime)
}

func (a row) compare(b row, desc bool) int {
	c := cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.keyTime, b.keyTime), cmp.Compare(a.created, b.created),
		cmp.Compare(a.precise, b.precise), cmp.Compare(a.id, b.id))
	if desc {
		return -c
	}
	return c
}

// firstAfter returns, in order, the first limit tasks that come after the
// marker row (keyset pagination, as Glance's query) and match the filters.
// It keeps only limit rows sorted, not the whole list: O(n log limit).
func firstAfter(rows []row, after *row, q *listQuery) []task {
	var best []row // sorted, at most q.limit
	for _, r := range rows {
		if after != nil && r.compare(*after, q.desc) <= 0 {
			continue
		}
		if len(best) == q.limit && (q.limit == 0 || r.compare(best[len(best)-1], q.desc) >= 0) {
			continue
		}
		if len(q.filters) > 0 && !r.view().matches(q.filters) {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, r, func(x, y row) int { return x.compare(y, q.desc) })
		best = slices.Insert(best, i, r)
		if len(best) > q.limit {
			best = best[:q.limit]
		}
	}
	out := make([]task, len(best))
	for i, r := range best {
		out[i] = r.view()
	}
	return out
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
