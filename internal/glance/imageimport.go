package glance

import (
	"cmp"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// importMethods are the interoperable import methods the shim enables:
// web-download only (glance-direct needs staging uploads, copy-image more
// than one store).
var importMethods = []string{"web-download"}

// importInfo is GET /v2/info/import.
func (s *Server) importInfo(w http.ResponseWriter, _ *http.Request, _ *Identity, _ string) {
	s.writeJSON(w, http.StatusOK, encodePy(object{{"import-methods", object{
		{"description", "Import methods available."}, {"type", "array"}, {"value", stringsAny(importMethods)},
	}}}, false))
}

// importImage is POST /v2/images/{id}/import, checked in Glance's order. A
// web-download becomes an ImageImportTask that fills the queued image.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	ctx := r.Context()
	body, e := readImageBody(r)
	if e != nil {
		e.write(w, r)
		return
	}
	uri, e := checkImportBody(body)
	if e != nil {
		e.write(w, r)
		return
	}
	if e := s.imagesAllowed(ctx, id, "update"); e != nil {
		e.write(w, r)
		return
	}
	g := s.lookupImage(w, r, id, imageID)
	if g == nil {
		return
	}
	if e := s.checkImportable(r, id, g); e != nil {
		e.write(w, r)
		return
	}
	if v, ok := body.get("all_stores_must_succeed"); ok && v == false {
		newError(http.StatusBadRequest, "All_stores_must_succeed can only be set with enabled_backends "+pyStr(uri)).write(w, r)
		return
	}
	u, _ := uri.(string)
	if u == "" || !(hasScheme(u, "http") || hasScheme(u, "https")) || s.passesFilter(ctx, u) != nil {
		newError(http.StatusBadRequest, "URI for web-download does not pass filtering: "+pyStr(uri)).write(w, r)
		return
	}
	t := s.importTask(g.obj, body, u, id, requestIDOf(ctx), time.Now())
	if err := s.Writer.Create(ctx, t); err != nil {
		s.internalError(w, r, fmt.Errorf("creating ImageImportTask: %w", err))
		return
	}
	s.Log.Info("Created ImageImportTask", "task", t.Namespace+"/"+t.Name, "image", g.id(), "project", id.ProjectID)
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

func hasScheme(u, scheme string) bool {
	return len(u) > len(scheme)+3 && u[:len(scheme)+3] == scheme+"://"
}

// checkImportBody is RequestDeserializer._validate_import_body; it returns
// method.uri.
func checkImportBody(body object) (any, *httpError) {
	method, ok := body.get("method")
	if !ok {
		return nil, newError(http.StatusBadRequest, "Import request requires a 'method' field.")
	}
	m, isObject := method.(object)
	if !isObject {
		return nil, newError(http.StatusInternalServerError, serverErrorText) // Glance: AttributeError
	}
	name, ok := m.get("name")
	if !ok {
		return nil, newError(http.StatusBadRequest, "Import request requires a 'name' field.")
	}
	if n, _ := name.(string); n != "web-download" {
		return nil, newError(http.StatusBadRequest, "Unknown import method name "+pyRepr(name)+".")
	}
	for _, key := range []string{"all_stores_must_succeed", "all_stores"} {
		if v, ok := body.get(key); ok {
			if _, isBool := v.(bool); !isBool {
				return nil, newError(http.StatusBadRequest, "'"+key+"' must be boolean value only")
			}
		}
	}
	uri, _ := m.get("uri")
	return uri, nil
}

// checkImportable is ImagesController.import_image's checks of the image.
func (s *Server) checkImportable(r *http.Request, id *Identity, g *glanceImage) *httpError {
	conflict := func(msg string) *httpError { return newError(http.StatusConflict, msg) }
	switch {
	case g.status() == string(tasksv1.ImageActive):
		return conflict("Image with status active cannot be target for import")
	case g.status() != string(tasksv1.ImageQueued):
		return conflict("Image needs to be in 'queued' state to use 'web-download' method")
	case g.obj.Spec.ContainerFormat == "":
		return conflict("'container_format' needs to be set before import")
	case g.obj.Spec.DiskFormat == "":
		return conflict("'disk_format' needs to be set before import")
	case !s.canModify(r.Context(), id, *g):
		return newError(http.StatusForbidden, "You do not own this image")
	case g.importTaskID != "":
		return conflict("New operation on image '" + g.id() + "' is not permitted as prior operation is still in progress")
	}
	return nil
}

// importTask is the ImageImportTask of a web-download: it imports the URL
// into the image, in the image's disk format, and leaves the image queued
// (or killed, with --web-download-failure=killed) when it fails.
func (s *Server) importTask(img *tasksv1.Image, body object, uri string, id *Identity, reqID string, now time.Time) *tasksv1.ImageImportTask {
	onFailure := s.WebDownloadFailure
	if onFailure == "" {
		onFailure = tasksv1.ImageFailureQueued
	}
	input := object{{"image_id", img.Name}, {"import_req", body}, {"backend", []any{nil}}}
	t := &tasksv1.ImageImportTask{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "import-" + uuid.NewString(),
			Namespace: img.Namespace,
			Labels:    map[string]string{"app.kubernetes.io/created-by": "glance-shim", LabelImageID: img.Name},
			Annotations: map[string]string{
				annotationInput:     string(encodePy(input, false)),
				annotationType:      "api_image_import",
				annotationOwner:     id.ProjectID,
				annotationCreatedAt: now.UTC().Format(preciseTime),
			},
		},
		Spec: tasksv1.ImageImportTaskSpec{
			Type: tasksv1.TaskTypeImport,
			Input: tasksv1.TaskInput{
				ImportFrom:       uri,
				ImportFromFormat: img.Spec.DiskFormat,
				ImageProperties:  imagePropertiesOfImage(img, s.ConversionFormat),
			},
			Image:        &tasksv1.ImageReference{Name: img.Name, OnFailure: onFailure},
			ExpiryPolicy: tasksv1.ExpiryPolicyDelete,
		},
	}
	if len(validation.IsValidLabelValue(id.ProjectID)) == 0 {
		t.Labels[LabelProjectID] = id.ProjectID
	}
	for k, v := range map[string]string{annotationUserID: id.UserID, annotationRequestID: reqID} {
		if v != "" {
			t.Annotations[k] = v
		}
	}
	return t
}

// imagePropertiesOfImage are the task's image properties: the image's own,
// in the conversion format when there is one.
func imagePropertiesOfImage(img *tasksv1.Image, conversion tasksv1.DiskFormat) *tasksv1.ImageProperties {
	sp := img.Spec
	p := &tasksv1.ImageProperties{
		DiskFormat: cmp.Or(conversion, sp.DiskFormat), ContainerFormat: sp.ContainerFormat, Name: sp.Name, Visibility: sp.Visibility,
		MinDisk: ptrTo(sp.MinDisk), MinRAM: ptrTo(sp.MinRAM), Tags: sp.Tags, Protected: ptrTo(sp.Protected),
	}
	if len(sp.Properties) > 0 {
		p.Properties = sp.Properties
	}
	return p
}

// imageTaskList is GET /v2/images/{id}/tasks: the image's tasks as
// Glance's database rows.
func (s *Server) imageTaskList(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	ctx := r.Context()
	if e := s.imagesAllowed(ctx, id, "get"); e != nil {
		e.write(w, r)
		return
	}
	g, err := s.findImage(ctx, id, imageID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if g == nil {
		newError(http.StatusNotFound, notFoundText).write(w, r)
		return
	}
	var tasks []tasksv1.ImageImportTask
	if !g.legacy() { // Glance records no image on a legacy import task
		if tasks, err = s.imageTasks(ctx, g.obj); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	out, owners := []any{}, s.owners()
	for i := range tasks {
		owner, err := owners.taskOwner(ctx, &tasks[i])
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		out = append(out, taskRow(&tasks[i], owner, g.id()))
	}
	s.writeJSON(w, http.StatusOK, encodePy(object{{"tasks", out}}, false))
}

// taskRow is a task as Glance's tasks_get_by_image returns it: the
// database row, times in Python's isoformat.
func taskRow(t *tasksv1.ImageImportTask, owner, imageID string) object {
	v := taskOf(t, owner)
	var expires any
	if v.expiresAt != nil {
		expires = isoformat(*v.expiresAt)
	}
	created := t.CreationTimestamp.Time
	if c, err := time.Parse(preciseTime, createdAt(t)); err == nil {
		created = c
	}
	var result any
	if t.Status.Status == tasksv1.TaskSuccess {
		result = object{{"image_id", imageID}}
	}
	return object{
		{"id", v.id}, {"type", v.typ}, {"status", v.status}, {"owner", v.owner},
		{"expires_at", expires}, {"created_at", isoformat(created)}, {"updated_at", isoformat(v.updatedAt)},
		{"deleted_at", nil}, {"deleted", false}, {"image_id", imageID},
		{"request_id", v.requestID}, {"user_id", v.userID}, {"input", v.input}, {"result", result}, {"message", v.message},
	}
}

// isoformat is Python's datetime.isoformat() of a naive UTC time:
// microseconds only when there are some.
func isoformat(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	if t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04:05")
	}
	return t.Format("2006-01-02T15:04:05.000000")
}
