package glance

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// imageSortKeys are the keys Glance sorts images by.
var imageSortKeys = []string{"name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"}

// imageQuery is a validated GET /v2/images.
type imageQuery struct {
	params  []param
	filters []param // in request order, last value of a key
	tags    []string
	keys    []string
	dirs    []string // "asc" or "desc", one per key
	marker  string
	limit   int
	hidden  bool
}

// dictOf is Python's dict() of a WebOb MultiDict: each key once, in the
// order it first appears, with its last value.
func dictOf(params []param) []param {
	var out []param
	for _, p := range params {
		if i := slices.IndexFunc(out, func(q param) bool { return q.key == p.key }); i >= 0 {
			out[i].value = p.value
		} else {
			out = append(out, p)
		}
	}
	return out
}

// parseImageQuery validates the query in Glance's order.
func parseImageQuery(params []param) (*imageQuery, *httpError) {
	bad := func(msg string) *httpError { return newError(http.StatusBadRequest, msg) }
	q := &imageQuery{params: params, limit: defaultLimit}
	var rest []param
	var sortKeys, sortDirs []string
	sortNew, hasSortNew := "", false
	for _, p := range params {
		switch p.key {
		case "limit", "marker", "member_status":
		case "tag":
			q.tags = append(q.tags, strings.TrimSpace(p.value))
		case "sort_key":
			sortKeys = append(sortKeys, strings.TrimSpace(p.value))
		case "sort_dir":
			sortDirs = append(sortDirs, strings.TrimSpace(p.value))
		case "sort":
			sortNew, hasSortNew = p.value, true
		default:
			rest = append(rest, p)
		}
	}
	q.filters = dictOf(rest)
	if v, _ := lookup(params, "visibility"); v != "" && !slices.Contains([]string{"community", "public", "private", "shared", "all"}, v) {
		return nil, bad("Invalid visibility value: " + v)
	}
	if v, _ := lookup(params, "changes-since"); v != "" {
		return nil, bad(`The "changes-since" filter is no longer available on v2.`)
	}
	if v, ok := lookup(params, "member_status"); ok && !slices.Contains([]string{"pending", "accepted", "rejected", "all"}, v) {
		return nil, bad("Invalid status: " + v)
	}
	q.marker, _ = lookup(params, "marker")
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
	checkKey := func(k string) *httpError {
		if !slices.Contains(imageSortKeys, k) {
			return bad("Invalid sort key: " + k + ". It must be one of the following: " + strings.Join(imageSortKeys, ", ") + ".")
		}
		return nil
	}
	checkDir := func(d string) *httpError {
		if d != "asc" && d != "desc" {
			return bad("Invalid sort direction: " + d)
		}
		return nil
	}
	if hasSortNew {
		if len(sortKeys) > 0 || len(sortDirs) > 0 {
			return nil, bad("Old and new sorting syntax cannot be combined")
		}
		for _, part := range strings.Split(strings.TrimSpace(sortNew), ",") {
			k, d, _ := strings.Cut(part, ":")
			d = cmp.Or(d, "desc")
			if e := cmp.Or(checkKey(strings.TrimSpace(k)), checkDir(strings.TrimSpace(d))); e != nil {
				return nil, e
			}
			q.keys, q.dirs = append(q.keys, strings.TrimSpace(k)), append(q.dirs, strings.TrimSpace(d))
		}
	} else {
		for _, k := range sortKeys {
			if e := checkKey(k); e != nil {
				return nil, e
			}
		}
		for _, d := range sortDirs {
			if e := checkDir(d); e != nil {
				return nil, e
			}
		}
		if len(sortDirs) > 1 && len(sortDirs) != len(sortKeys) {
			return nil, bad("Number of sort dirs does not match the number of sort keys")
		}
		q.keys, q.dirs = sortKeys, sortDirs
	}
	hidden, _ := lookupFilter(q.filters, "os_hidden")
	if hidden = strings.ToLower(cmp.Or(hidden, "false")); hidden != "true" && hidden != "false" {
		return nil, bad("Invalid value '" + hidden + "' for 'os_hidden' filter. Valid values are 'true' or 'false'.")
	}
	q.hidden = hidden == "true"
	if v, ok := lookupFilter(q.filters, "protected"); ok && v != "true" && v != "false" {
		return nil, bad("Invalid value '" + v + "' for 'protected' filter. Valid values are 'true' or 'false'.")
	}
	q.completeSort()
	return q, nil
}

func lookupFilter(filters []param, key string) (string, bool) { return lookup(filters, key) }

// completeSort is Glance's defaults: created_at desc; one direction
// applies to every key; created_at and id end every order.
func (q *imageQuery) completeSort() {
	if len(q.keys) == 0 {
		q.keys = []string{"created_at"}
	}
	def := "desc"
	if len(q.dirs) == 1 {
		def = q.dirs[0]
	}
	for len(q.dirs) < len(q.keys) {
		q.dirs = append(q.dirs, def)
	}
	for _, k := range []string{"created_at", "id"} {
		if !slices.Contains(q.keys, k) {
			q.keys, q.dirs = append(q.keys, k), append(q.dirs, def)
		}
	}
}

// listImages is GET /v2/images.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
	ctx := r.Context()
	if e := s.imagesAllowed(ctx, id, "list"); e != nil {
		e.write(w, r)
		return
	}
	q, e := parseImageQuery(parseQuery(r.URL.RawQuery))
	if e != nil {
		e.write(w, r)
		return
	}
	var list tasksv1.ImageList
	if err := s.Cache.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		s.internalError(w, r, err)
		return
	}
	seesAll := s.Auth.SeesAll(ctx, id)
	visibility, _ := lookupFilter(q.filters, "visibility")
	own, _ := s.namespaceOf(ctx, id)
	var rows []glanceImage
	owners := s.owners()
	for _, img := range oneImagePerID(list.Items, own) {
		owner, err := owners.of(ctx, img)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		g := glanceImage{obj: img, ownerID: owner}
		if !g.gone() && listable(g, id, seesAll, visibility) {
			rows = append(rows, g)
		}
	}
	slices.SortFunc(rows, func(a, b glanceImage) int { return q.compare(a, b) })
	start := 0
	if q.marker != "" {
		i := slices.IndexFunc(rows, func(g glanceImage) bool { return g.id() == q.marker })
		if i < 0 {
			newError(http.StatusBadRequest, "No image found with ID "+q.marker).write(w, r)
			return
		}
		start = i + 1
	}
	page := []any{}
	var last string
	for _, g := range rows[start:] {
		if len(page) == q.limit {
			break
		}
		if !q.matches(g) {
			continue
		}
		if err := s.fillImportTask(ctx, &g); err != nil {
			s.internalError(w, r, err)
			return
		}
		page = append(page, g.view())
		last = g.id()
	}
	params := dictOf(slices.DeleteFunc(slices.Clone(q.params), func(p param) bool { return p.key == "marker" }))
	body := object{{"images", page}, {"first", imageLink(params, "")}, {"schema", "/v2/schemas/images"}}
	if len(page) > 0 && len(page) == q.limit {
		body = append(body, member{"next", imageLink(params, last)})
	}
	s.writeJSON(w, http.StatusOK, encodePy(body, false))
}

// oneImagePerID keeps, of the Images that share an id, the one findImage
// returns: the one in the caller's namespace, else the oldest.
func oneImagePerID(items []tasksv1.Image, ownNamespace string) []*tasksv1.Image {
	at := make(map[string]int, len(items))
	out := make([]*tasksv1.Image, 0, len(items))
	for i := range items {
		img := &items[i]
		j, dup := at[img.Name]
		switch {
		case !dup:
			at[img.Name] = len(out)
			out = append(out, img)
		case out[j].Namespace == ownNamespace:
		case img.Namespace == ownNamespace || olderImage(*img, *out[j]) < 0:
			out[j] = img
		}
	}
	return out
}

// listable is Glance's image list visibility: community images only when
// asked for or owned; others' images only when public (or for admins).
func listable(g glanceImage, id *Identity, seesAll bool, visibility string) bool {
	own := g.owns(id)
	switch visibility {
	case "":
		if g.visibility() == "community" && !own {
			return false
		}
	case "all":
	default:
		if g.visibility() != visibility {
			return false
		}
	}
	return seesAll || own || g.visibility() == "public" || g.visibility() == "community"
}

// matches applies the filters: Glance's columns, tags, and any other key
// as an extra property.
func (q *imageQuery) matches(g glanceImage) bool {
	if g.hidden() != q.hidden {
		return false
	}
	for _, t := range q.tags {
		if !slices.Contains(g.obj.Spec.Tags, t) {
			return false
		}
	}
	for _, f := range q.filters {
		var got string
		switch f.key {
		case "os_hidden", "visibility":
			continue
		case "name":
			got = g.obj.Spec.Name
		case "status":
			got = g.status()
		case "owner":
			got = g.owner()
		case "id":
			got = g.id()
		case "disk_format":
			got = g.diskFormat()
		case "container_format":
			got = g.containerFormat()
		case "checksum":
			got = g.obj.Status.Checksum
		case "protected":
			got = strconv.FormatBool(g.obj.Spec.Protected)
		case "size_min", "size_max":
			n, err := strconv.ParseInt(f.value, 10, 64)
			size := g.obj.Status.Size
			if err != nil || size == nil || (f.key == "size_min" && *size < n) || (f.key == "size_max" && *size > n) {
				return false
			}
			continue
		default:
			v, ok := g.obj.Spec.Properties[f.key]
			if !ok {
				return false
			}
			got = v
		}
		if got != f.value {
			return false
		}
	}
	return true
}

// compare orders two images by the query's keys, as SQL does: NULL
// before any value.
func (q *imageQuery) compare(a, b glanceImage) int {
	for i, k := range q.keys {
		c := compareKey(a, b, k)
		if q.dirs[i] == "desc" {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func compareKey(a, b glanceImage, key string) int {
	switch key {
	case "size":
		return cmpNullInt(a.obj.Status.Size, b.obj.Status.Size)
	case "created_at":
		return a.createdAt().Compare(b.createdAt())
	case "updated_at":
		return a.updatedAt().Compare(b.updatedAt())
	}
	col := func(g glanceImage) string {
		switch key {
		case "name":
			return g.obj.Spec.Name
		case "status":
			return g.status()
		case "container_format":
			return g.containerFormat()
		case "disk_format":
			return g.diskFormat()
		}
		return g.id()
	}
	return strings.Compare(col(a), col(b)) // "" is NULL, first as in SQL
}

func cmpNullInt(a, b *int64) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return cmp.Compare(*a, *b)
}

// imageLink is Python's urlencode of the parameters, with the marker last.
func imageLink(params []param, marker string) string {
	var parts []string
	for _, p := range params {
		parts = append(parts, url.QueryEscape(p.key)+"="+url.QueryEscape(p.value))
	}
	if marker != "" {
		parts = append(parts, "marker="+marker)
	}
	if len(parts) == 0 {
		return "/v2/images"
	}
	return "/v2/images?" + strings.Join(parts, "&")
}
