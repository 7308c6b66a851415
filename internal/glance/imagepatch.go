package glance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// patchContentTypes are the JSON patch media types Glance takes, with the
// JSON Schema draft of their operation objects.
var patchContentTypes = map[string]int{
	"application/openstack-images-v2.0-json-patch": 4,
	"application/openstack-images-v2.1-json-patch": 10,
}

// Glance's RequestDeserializer lists for a change's path.
var (
	readonlyOnPatch = []string{"created_at", "updated_at", "status", "checksum", "os_hash_algo", "os_hash_value",
		"size", "virtual_size", "direct_url", "self", "file", "schema", "id"}
	reservedOnPatch = []string{"location", "deleted", "deleted_at"}
	// imageAttributes are the image's own attributes (hasattr(image, key)).
	imageAttributes = []string{"name", "disk_format", "container_format", "visibility", "protected", "os_hidden",
		"min_disk", "min_ram", "tags", "owner", "locations"}
)

// change is one JSON patch operation.
type change struct {
	op    string
	path  string // the one token Glance allows (but for locations)
	value any
}

// patchImage is PATCH /v2/images/{id}: add, replace and remove on the
// image's attributes and extra properties, as Glance applies them.
func (s *Server) patchImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	ctx := r.Context()
	draft, ok := patchContentTypes[mediaType(r.Header.Get("Content-Type"))]
	if !ok {
		e := &httpError{code: http.StatusUnsupportedMediaType, template: unsupportedMediaType, explanation: mediaType(r.Header.Get("Content-Type"))}
		e.headers = map[string]string{"Accept-Patch": "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"}
		e.write(w, r)
		return
	}
	body, e := readBodyAny(r)
	if e != nil {
		e.write(w, r)
		return
	}
	changes, e := parseChanges(body, draft)
	if e != nil {
		e.write(w, r)
		return
	}
	if e := s.imagesAllowed(ctx, id, "update"); e != nil {
		e.write(w, r)
		return
	}
	for attempt := 0; ; attempt++ {
		g := s.lookupImage(w, r, id, imageID)
		if g == nil {
			return
		}
		if len(changes) > 0 && !s.canModify(ctx, id, *g) {
			newError(http.StatusForbidden, "You do not own this image").write(w, r)
			return
		}
		img := g.obj.DeepCopy()
		order, e := s.applyChanges(r, id, img, g.propertyOrder(), changes, draft)
		if e != nil {
			e.write(w, r)
			return
		}
		if len(changes) > 0 {
			img.Annotations[annotationUpdatedAt] = time.Now().UTC().Format(preciseTime)
			err := s.Writer.Update(ctx, img)
			if apierrors.IsConflict(err) && attempt < 5 {
				continue // the operator changed the status meanwhile: apply to the new one
			}
			if err != nil {
				if apierrors.IsInvalid(err) {
					newError(http.StatusBadRequest, "The image cannot be stored: "+apiReason(err)).write(w, r)
					return
				}
				s.internalError(w, r, fmt.Errorf("updating Image: %w", err))
				return
			}
		}
		g.obj = img
		var err error
		if g.ownerID, err = s.resolveOwner(ctx, img); err != nil {
			s.internalError(w, r, err)
			return
		}
		s.writeJSON(w, http.StatusOK, encodePy(g.viewWithOrder(order), false))
		return
	}
}

func mediaType(contentType string) string {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// parseChanges is RequestDeserializer.update.
func parseChanges(body any, draft int) ([]change, *httpError) {
	list, ok := body.([]any)
	if !ok {
		return nil, newError(http.StatusBadRequest, "Request body must be a JSON array of operation objects.")
	}
	var out []change
	for _, raw := range list {
		m, ok := raw.(object)
		if !ok {
			return nil, newError(http.StatusBadRequest, "Operations must be JSON objects.")
		}
		c, e := parseChange(m, draft)
		if e != nil {
			return nil, e
		}
		out = append(out, c)
	}
	return out, nil
}

var supportedOps = []string{"add", "remove", "replace"}

func parseChange(m object, draft int) (change, *httpError) {
	bad := func(msg string) (change, *httpError) { return change{}, newError(http.StatusBadRequest, msg) }
	var c change
	var pointer any
	if draft == 10 {
		op, ok := m.get("op")
		if !ok || op == nil {
			return bad("Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.")
		}
		s, _ := op.(string)
		if !slices.Contains(supportedOps, s) {
			return bad("Invalid operation: `" + pyStr(op) + "`. It must be one of the following: add, remove, replace.")
		}
		c.op = s
		if pointer, ok = m.get("path"); !ok {
			return bad("Unable to find 'path' in JSON Schema change")
		}
	} else {
		for _, op := range supportedOps {
			if v, ok := m.get(op); ok {
				if c.op != "" {
					return bad(`Operation objects must contain only one member named "add", "remove", or "replace".`)
				}
				c.op, pointer = op, v
			}
		}
		if c.op == "" {
			return bad(`Operation objects must contain exactly one member named "add", "remove", or "replace".`)
		}
	}
	p, _ := pointer.(string)
	path, e := decodePointer(p)
	if e != nil {
		return change{}, e
	}
	if len(path) != 1 {
		return bad("Invalid JSON pointer for this resource: '/" + strings.Join(path, "/") + "'")
	}
	c.path = path[0]
	if c.op != "remove" {
		v, ok := m.get("value")
		if !ok {
			return bad(`Operation "` + c.op + `" requires a member named "value".`)
		}
		c.value = v
	}
	return c, validateChange(c)
}

var adjacentSlashes = regexp.MustCompile(`/\s*?/`)
var badTilde = regexp.MustCompile(`~[^01]`)

// decodePointer is _decode_json_pointer with _validate_json_pointer.
func decodePointer(p string) ([]string, *httpError) {
	bad := func(msg string) ([]string, *httpError) {
		return nil, newError(http.StatusBadRequest, "Pointer `"+p+"` "+msg)
	}
	switch {
	case !strings.HasPrefix(p, "/"):
		return bad(`does not start with "/".`)
	case adjacentSlashes.MatchString(p[1:]):
		return bad(`contains adjacent "/".`)
	case len(p) > 1 && strings.HasSuffix(p, "/"):
		return bad(`end with "/".`)
	case strings.TrimSpace(p[1:]) == "/":
		return bad("does not contains valid token.")
	case badTilde.MatchString(p) || strings.HasSuffix(p, "~"):
		return bad(`contains "~" not part of a recognized escape sequence.`)
	}
	var out []string
	for _, part := range strings.Split(strings.TrimLeft(p, "/"), "/") {
		out = append(out, strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")))
	}
	return out, nil
}

// validateChange is RequestDeserializer._validate_change.
func validateChange(c change) *httpError {
	switch {
	case slices.Contains(readonlyOnPatch, c.path):
		return newError(http.StatusForbidden, "Attribute '"+c.path+"' is read-only.")
	case slices.Contains(reservedOnPatch, c.path) || strings.HasPrefix(c.path, "os_glance"):
		return newError(http.StatusForbidden, "Attribute '"+c.path+"' is reserved.")
	case c.op == "remove":
		return nil
	}
	return validateImage(object{{c.path, c.value}})
}

// applyChanges applies the changes to the image as Glance's _do_add,
// _do_replace and _do_remove do, and returns the extra properties' order
// Glance's answer shows.
func (s *Server) applyChanges(r *http.Request, id *Identity, img *tasksv1.Image, order []string, changes []change, draft int) ([]string, *httpError) {
	var stored []string
	json.Unmarshal([]byte(img.Annotations[annotationPropertyOrder]), &stored)
	for _, k := range order {
		if !slices.Contains(stored, k) {
			stored = append(stored, k)
		}
	}
	for _, c := range changes {
		_, isExtra := img.Spec.Properties[c.path]
		isAttr := slices.Contains(imageAttributes, c.path)
		if c.path == "visibility" && c.value == "public" && c.op != "remove" {
			if e := s.mayPublicize(r.Context(), id); e != nil {
				return nil, e
			}
		}
		switch c.op {
		case "remove":
			switch {
			case isAttr:
				return nil, withDetail(http.StatusForbidden, "Property "+c.path+" may not be removed.")
			case !isExtra:
				return nil, withDetail(http.StatusConflict, "Property "+c.path+" does not exist.")
			}
			delete(img.Spec.Properties, c.path)
			order = slices.DeleteFunc(order, func(k string) bool { return k == c.path })
			continue
		case "replace":
			if c.path == "owner" && !s.Auth.SeesAll(r.Context(), id) {
				return nil, withDetail(http.StatusForbidden, "Owner can't be updated by non admin.")
			}
			if !isAttr && !isExtra {
				return nil, withDetail(http.StatusConflict, "Property "+c.path+" does not exist.")
			}
		case "add":
			if draft == 4 && (isAttr || isExtra) {
				return nil, withDetail(http.StatusConflict, "Property "+c.path+" already present.")
			}
			if c.path == "owner" && c.value != id.ProjectID && !s.Auth.SeesAll(r.Context(), id) {
				// Glance applies the add, finds the image no longer
				// visible to the caller, and rolls back with this.
				return nil, newError(http.StatusForbidden, "Forbidding request, image "+img.Name+" not visible")
			}
		}
		if c.path == "owner" {
			if e := s.checkOwnerMove(r.Context(), img, c.value); e != nil {
				return nil, e
			}
		}
		if isAttr {
			if e := setAttribute(img, c.path, c.value); e != nil {
				return nil, e
			}
			continue
		}
		if img.Spec.Properties == nil {
			img.Spec.Properties = map[string]string{}
		}
		img.Spec.Properties[c.path] = c.value.(string)
		if !isExtra {
			order = append(order, c.path)
			if !slices.Contains(stored, c.path) {
				stored = append(stored, c.path)
			}
		}
	}
	b, _ := json.Marshal(stored)
	img.Annotations[annotationPropertyOrder] = string(b)
	return order, nil
}

// checkOwnerMove refuses an owner its namespace does not belong to, where
// namespaces map to projects: the owner is the namespace's project, and an
// Image does not move between namespaces.
func (s *Server) checkOwnerMove(ctx context.Context, img *tasksv1.Image, value any) *httpError {
	owner, _ := value.(string)
	project, mapped, err := s.Namespaces.ProjectOf(ctx, img.Namespace)
	if err != nil || !mapped || owner == project {
		return nil // an error here is resolveOwner's to report
	}
	if ns, err := s.Namespaces.For(ctx, owner); owner != "" && err == nil && ns == img.Namespace {
		return nil
	}
	return withDetail(http.StatusForbidden, fmt.Sprintf(
		"The owner of image %s is the project of its namespace %s: it cannot become %s here.", img.Name, img.Namespace, pyStr(value)))
}

// setAttribute sets one of the image's own attributes, with the domain's
// checks.
func setAttribute(img *tasksv1.Image, key string, v any) *httpError {
	switch key {
	case "tags":
		img.Spec.Tags = nil
		for _, t := range v.([]any) {
			if !slices.Contains(img.Spec.Tags, t.(string)) {
				img.Spec.Tags = append(img.Spec.Tags, t.(string))
			}
		}
		return nil
	case "owner":
		if v == nil {
			delete(img.Annotations, annotationOwner)
		} else {
			img.Annotations[annotationOwner] = v.(string)
		}
		return nil
	case "locations":
		return newError(http.StatusForbidden, "It's not allowed to update locations if locations are invisible.")
	case "disk_format", "container_format":
		if st := img.Status.Status; st != "" && st != tasksv1.ImageQueued {
			return newError(http.StatusForbidden, "Attribute "+key+" can be only replaced for a queued image.")
		}
	case "min_disk", "min_ram":
		if n, _ := v.(json.Number).Int64(); n < 0 {
			return newError(http.StatusBadRequest, fmt.Sprintf("Invalid value '%s' for parameter '%s': Cannot be a negative value", v, key))
		}
	}
	setBase(&img.Spec, img.Annotations, key, v)
	return nil
}
