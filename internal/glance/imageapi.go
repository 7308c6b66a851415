package glance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// matchImages routes the images API as Glance's router does.
func (s *Server) matchImages(path string) (*route, string) {
	if path == "/info/import" {
		return &route{allow: "GET", methods: map[string]handlerFunc{http.MethodGet: s.importInfo}}, ""
	}
	if path == "/images" {
		return &route{allow: "GET, POST", methods: map[string]handlerFunc{http.MethodGet: s.listImages, http.MethodPost: s.createImage}}, ""
	}
	rest, ok := strings.CutPrefix(path, "/images/")
	if !ok || rest == "" {
		return nil, ""
	}
	imageID, sub, _ := strings.Cut(rest, "/")
	switch sub {
	case "":
		return &route{allow: "GET, PATCH, DELETE", methods: map[string]handlerFunc{
			http.MethodGet: s.showImage, http.MethodPatch: s.patchImage, http.MethodDelete: s.deleteImage}}, imageID
	case "import":
		return &route{allow: "POST", methods: map[string]handlerFunc{http.MethodPost: s.importImage}}, imageID
	case "tasks":
		return &route{allow: "GET", methods: map[string]handlerFunc{http.MethodGet: s.imageTaskList}}, imageID
	case "file":
		return &route{allow: "GET", methods: map[string]handlerFunc{http.MethodGet: s.downloadImage}}, imageID
	}
	if tag, ok := strings.CutPrefix(sub, "tags/"); ok && tag != "" && !strings.Contains(tag, "/") {
		return &route{allow: "PUT, DELETE", methods: map[string]handlerFunc{
			http.MethodPut: func(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
				s.changeTag(w, r, id, imageID, tag, true)
			},
			http.MethodDelete: func(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
				s.changeTag(w, r, id, imageID, tag, false)
			},
		}}, imageID
	}
	return nil, ""
}

// ImageAuth is an Auth that decides access to the images API itself (the
// kubernetes auth asks RBAC about images); any other Auth lets every
// caller with a project use it, as Glance's default policy.
type ImageAuth interface {
	AllowedImages(ctx context.Context, id *Identity, verb, namespace string) (bool, error)
}

func (s *Server) imagesAllowed(ctx context.Context, id *Identity, verb string) *httpError {
	ia, ok := s.Auth.(ImageAuth)
	if !ok {
		return nil
	}
	ns, err := s.namespaceOf(ctx, id)
	if err != nil {
		return newError(http.StatusForbidden, "You are not authorized to complete "+verb+"_image action.")
	}
	allowed, err := ia.AllowedImages(ctx, id, verb, ns)
	if err != nil {
		s.Log.Error(err, "Access review failed")
		return newError(http.StatusInternalServerError, serverErrorText)
	}
	if !allowed {
		return newError(http.StatusForbidden, "You are not authorized to complete "+verb+"_image action.")
	}
	return nil
}

// mayPublicize is Glance's publicize_image policy (admin only): who may
// make an image public, which every project then sees.
func (s *Server) mayPublicize(ctx context.Context, id *Identity) *httpError {
	if s.Auth.SeesAll(ctx, id) {
		return nil
	}
	return newError(http.StatusForbidden, "You are not authorized to complete publicize_image action.")
}

// lookupImage finds a visible image or writes Glance's 404 (or a 500).
func (s *Server) lookupImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) *glanceImage {
	g, err := s.findImage(r.Context(), id, imageID)
	if err != nil {
		s.internalError(w, r, err)
		return nil
	}
	if g == nil {
		newError(http.StatusNotFound, "No image found with ID "+imageID).write(w, r)
	}
	return g
}

// showImage is GET /v2/images/{id}.
func (s *Server) showImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	if e := s.imagesAllowed(r.Context(), id, "get"); e != nil {
		e.write(w, r)
		return
	}
	if g := s.lookupImage(w, r, id, imageID); g != nil {
		s.writeJSON(w, http.StatusOK, encodePy(g.view(), false))
	}
}

// deleteImage is DELETE /v2/images/{id}: the Image goes, and the operator
// frees its bytes.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	ctx := r.Context()
	if e := s.imagesAllowed(ctx, id, "delete"); e != nil {
		e.write(w, r)
		return
	}
	g, err := s.findImage(ctx, id, imageID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	switch {
	case g == nil:
		newError(http.StatusNotFound, "Failed to find image "+imageID+" to delete").write(w, r)
		return
	case !s.canModify(ctx, id, *g):
		newError(http.StatusForbidden, "You do not own this image").write(w, r)
		return
	case g.obj.Spec.Protected:
		newError(http.StatusForbidden, "Image "+g.id()+" is protected and cannot be deleted.").write(w, r)
		return
	}
	err = s.Writer.Delete(ctx, g.obj, client.Preconditions{UID: &g.obj.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		s.internalError(w, r, fmt.Errorf("deleting Image: %w", err))
		return
	}
	s.Log.Info("Deleted Image", "image", g.obj.Namespace+"/"+g.obj.Name, "project", id.ProjectID)
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	w.WriteHeader(http.StatusNoContent)
}

// Glance's lists of what a client may not set on an image.
var (
	disallowedOnCreate = []string{"direct_url", "self", "file", "schema", "stores"}
	reservedOnCreate   = []string{"location", "deleted", "deleted_at"}
	// readonlyOfFactory are ImageFactory._readonly_properties that are
	// base properties (the others never reach it).
	readonlyOfFactory = []string{"created_at", "updated_at", "status", "checksum", "size", "virtual_size"}
	// baseProperties are RequestDeserializer._base_properties.
	baseProperties = []string{"checksum", "created_at", "container_format", "disk_format", "id", "min_disk", "min_ram",
		"name", "size", "virtual_size", "status", "tags", "owner", "updated_at", "visibility", "protected", "os_hidden"}
)

// createImage is POST /v2/images, checked in Glance's order.
func (s *Server) createImage(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
	ctx := r.Context()
	body, e := readImageBody(r)
	if e != nil {
		e.write(w, r)
		return
	}
	if e := checkNewImage(body); e != nil {
		e.write(w, r)
		return
	}
	if e := s.imagesAllowed(ctx, id, "create"); e != nil {
		e.write(w, r)
		return
	}
	owner := id.ProjectID
	if v, ok := body.get("owner"); ok && v != nil {
		owner = v.(string)
		if owner != id.ProjectID && !s.Auth.SeesAll(ctx, id) {
			newError(http.StatusForbidden, "You are not permitted to create images owned by '"+owner+"'.").write(w, r)
			return
		}
	}
	if v, _ := body.get("visibility"); v == "public" {
		if e := s.mayPublicize(ctx, id); e != nil {
			e.write(w, r)
			return
		}
	}
	imageID := uuid.NewString()
	if v, ok := body.get("id"); ok {
		imageID = strings.ToLower(v.(string))
	}
	// The image lives in its owner's namespace, which is what makes the
	// owner where namespaces map to projects.
	ns, err := s.Namespaces.For(ctx, owner)
	if owner == "" {
		ns, err = s.namespaceOf(ctx, id)
	}
	if err != nil {
		s.internalError(w, r, fmt.Errorf("mapping project %q to a namespace: %w", owner, err))
		return
	}
	if other, err := s.imageExists(ctx, imageID); err != nil || other {
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		newError(http.StatusConflict, "Image ID "+imageID+" already exists!").write(w, r)
		return
	}
	img := newImage(ns, imageID, owner, body, time.Now())
	if err := s.Writer.Create(ctx, img); err != nil {
		switch {
		case apierrors.IsAlreadyExists(err):
			newError(http.StatusConflict, "Image ID "+imageID+" already exists!").write(w, r)
		case apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err):
			newError(http.StatusBadRequest, "The image cannot be stored: "+apiReason(err)).write(w, r)
		case apierrors.IsNotFound(err):
			newError(http.StatusForbidden, fmt.Sprintf("Project %s cannot have images here: its namespace %q does not exist.", owner, ns)).write(w, r)
		default:
			s.internalError(w, r, fmt.Errorf("creating Image: %w", err))
		}
		return
	}
	s.Log.Info("Created Image", "image", img.Namespace+"/"+img.Name, "project", id.ProjectID)
	w.Header().Set("Location", requestBase(r)+"/v2/images/"+imageID)
	w.Header().Set("OpenStack-image-import-methods", strings.Join(importMethods, ","))
	s.writeJSON(w, http.StatusCreated, encodePy(glanceImage{obj: img, ownerID: owner}.view(), false))
}

// readImageBody reads a JSON object body; a body of another JSON type is
// the 500 Glance's deserializer fails with.
func readImageBody(r *http.Request) (object, *httpError) {
	body, e := readBodyAny(r)
	if e != nil {
		return nil, e
	}
	o, ok := body.(object)
	if !ok {
		return nil, newError(http.StatusInternalServerError, serverErrorText)
	}
	return o, nil
}

// checkNewImage is RequestDeserializer.create and ImageFactory.new_image's
// checks.
func checkNewImage(body object) *httpError {
	for _, key := range disallowedOnCreate {
		if _, ok := body.get(key); ok {
			return newError(http.StatusForbidden, "Attribute '"+key+"' is read-only.")
		}
	}
	if e := validateImage(body); e != nil {
		return e
	}
	for _, m := range body {
		if slices.Contains(baseProperties, m.key) {
			continue
		}
		if len([]rune(m.key)) > 255 {
			return newError(http.StatusBadRequest, "Custom property should not be greater than 255 characters.")
		}
		if slices.Contains(reservedOnCreate, m.key) || strings.HasPrefix(m.key, "os_glance") {
			return withDetail(http.StatusForbidden, "Attribute '"+m.key+"' is reserved.")
		}
	}
	for _, key := range readonlyOfFactory {
		if _, ok := body.get(key); ok {
			return newError(http.StatusForbidden, "Attribute '"+key+"' is read-only.")
		}
	}
	for _, key := range []string{"min_disk", "min_ram"} {
		if v, ok := body.get(key); ok {
			if n, _ := v.(json.Number).Int64(); n < 0 {
				return newError(http.StatusBadRequest, fmt.Sprintf("Invalid value '%s' for parameter '%s': Cannot be a negative value", v, key))
			}
		}
	}
	return nil
}

// imageExists reports whether an Image with the id exists in any namespace.
func (s *Server) imageExists(ctx context.Context, imageID string) (bool, error) {
	var list tasksv1.ImageList
	if err := s.Cache.List(ctx, &list, client.MatchingFields{indexImageName: imageID}); err != nil {
		return false, err
	}
	return len(list.Items) > 0, nil
}

// newImage is the Image of a validated POST /v2/images body.
func newImage(namespace, imageID, owner string, body object, now time.Time) *tasksv1.Image {
	img := &tasksv1.Image{
		ObjectMeta: metav1.ObjectMeta{
			Name: imageID, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/created-by": "glance-shim"},
			Annotations: map[string]string{
				annotationOwner:     owner,
				annotationCreatedAt: now.UTC().Format(preciseTime),
			},
		},
		Spec: tasksv1.ImageSpec{Visibility: "shared"},
	}
	if len(validation.IsValidLabelValue(owner)) == 0 && owner != "" {
		img.Labels[LabelProjectID] = owner
	}
	var order []string
	for _, m := range body {
		switch m.key {
		case "id", "owner":
		case "tags":
			for _, t := range m.value.([]any) {
				if !slices.Contains(img.Spec.Tags, t.(string)) {
					img.Spec.Tags = append(img.Spec.Tags, t.(string))
				}
			}
		default:
			if !setBase(&img.Spec, img.Annotations, m.key, m.value) {
				if img.Spec.Properties == nil {
					img.Spec.Properties = map[string]string{}
				}
				img.Spec.Properties[m.key] = m.value.(string)
				order = append(order, m.key)
			}
		}
	}
	setPropertyOrder(img, order)
	return img
}

func setPropertyOrder(img *tasksv1.Image, order []string) {
	if len(order) == 0 {
		delete(img.Annotations, annotationPropertyOrder)
		return
	}
	b, _ := json.Marshal(order)
	img.Annotations[annotationPropertyOrder] = string(b)
}

// setBase sets a base attribute of the image from a schema-valid value,
// and reports whether the key is one.
func setBase(spec *tasksv1.ImageSpec, annotations map[string]string, key string, v any) bool {
	str, _ := v.(string)
	switch key {
	case "name":
		spec.Name = str
	case "disk_format":
		spec.DiskFormat = tasksv1.DiskFormat(str)
	case "container_format":
		spec.ContainerFormat = tasksv1.ContainerFormat(str)
	case "visibility":
		spec.Visibility = tasksv1.Visibility(str)
	case "protected":
		spec.Protected = v.(bool)
	case "os_hidden":
		if v.(bool) {
			annotations[annotationOSHidden] = "true"
		} else {
			delete(annotations, annotationOSHidden)
		}
	case "min_disk", "min_ram":
		n, _ := v.(json.Number).Int64()
		if key == "min_disk" {
			spec.MinDisk = int32(min(n, 1<<31-1))
		} else {
			spec.MinRAM = int32(min(n, 1<<31-1))
		}
	default:
		return false
	}
	return true
}

// changeTag is PUT and DELETE /v2/images/{id}/tags/{tag}.
func (s *Server) changeTag(w http.ResponseWriter, r *http.Request, id *Identity, imageID, rawTag string, add bool) {
	ctx := r.Context()
	tag, err := url.PathUnescape(rawTag)
	if err != nil {
		newError(http.StatusNotFound, notFoundText).write(w, r)
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
		if !s.canModify(ctx, id, *g) {
			newError(http.StatusForbidden, "You do not own this image").write(w, r)
			return
		}
		img := g.obj.DeepCopy()
		has := slices.Contains(img.Spec.Tags, tag)
		switch {
		case add && !has:
			img.Spec.Tags = append(img.Spec.Tags, tag)
		case !add && has:
			img.Spec.Tags = slices.DeleteFunc(img.Spec.Tags, func(t string) bool { return t == tag })
		case !add:
			newError(http.StatusNotFound, notFoundText).write(w, r)
			return
		}
		img.Annotations[annotationUpdatedAt] = time.Now().UTC().Format(preciseTime)
		err := s.Writer.Update(ctx, img)
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if apierrors.IsInvalid(err) {
			newError(http.StatusBadRequest, "The image cannot be stored: "+apiReason(err)).write(w, r)
			return
		}
		if err != nil {
			s.internalError(w, r, fmt.Errorf("updating Image: %w", err))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
		return
	}
}
