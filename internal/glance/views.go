package glance

import (
	"time"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// What the shim keeps on an ImageImportTask besides its spec: the Glance
// task as it was posted, and who posted it.
const (
	annotationInput     = "tasks.imageimport.io/glance-input"
	annotationType      = "tasks.imageimport.io/glance-type"
	annotationOwner     = "tasks.imageimport.io/owner"
	annotationUserID    = "tasks.imageimport.io/user-id"
	annotationRequestID = "tasks.imageimport.io/request-id"
	// annotationCreatedAt is when the shim created the task, to the
	// nanosecond (preciseTime): Glance orders tasks created within a second
	// by their sub-second creation times.
	annotationCreatedAt = "tasks.imageimport.io/created-at"
)

// preciseTime is the layout of annotationCreatedAt: UTC, fixed width, so
// that its text sorts as the time does.
const preciseTime = "2006-01-02T15:04:05.000000000Z"

// task is the Glance view of an ImageImportTask.
type task struct {
	id, typ, status, owner, message string
	input                           rawJSON
	imageID                         string // result.image_id
	requestID, userID               string
	createdAt, updatedAt            time.Time
	expiresAt                       *time.Time
}

// taskOf is the Glance view of a task whose owner is owner (see
// owners.taskOwner: never the annotation alone).
func taskOf(t *tasksv1.ImageImportTask, owner string) task {
	a := t.Annotations
	v := task{
		id:        string(t.UID),
		typ:       firstNonEmpty(a[annotationType], string(t.Spec.Type)),
		status:    firstNonEmpty(string(t.Status.Status), string(tasksv1.TaskPending)),
		owner:     owner,
		input:     rawJSON(a[annotationInput]),
		requestID: a[annotationRequestID],
		userID:    a[annotationUserID],
		createdAt: t.CreationTimestamp.Time,
		updatedAt: t.CreationTimestamp.Time,
	}
	if len(v.input) == 0 {
		v.input = inputOf(t)
	}
	if t.Status.UpdatedAt != nil {
		v.updatedAt = t.Status.UpdatedAt.Time
	}
	if t.Status.ExpiresAt != nil {
		e := t.Status.ExpiresAt.Time
		v.expiresAt = &e
	}
	// Glance says why a task failed, and nothing while it runs: the
	// operator's explanations of a waiting task are for kubectl users.
	if t.Status.Status == tasksv1.TaskFailure {
		v.message = t.Status.Message
	}
	if t.Status.Status == tasksv1.TaskSuccess && t.Status.Result != nil {
		v.imageID = t.Status.Result.ImageID
	}
	return v
}

// inputOf renders the input of a task created with kubectl in Glance's words.
func inputOf(t *tasksv1.ImageImportTask) rawJSON {
	in := t.Spec.Input
	o := object{{"import_from", in.ImportFrom}}
	if in.ImportFromFormat != "" {
		o = append(o, member{"import_from_format", string(in.ImportFromFormat)})
	}
	if p := in.ImageProperties; p != nil {
		o = append(o, member{"image_properties", object{
			{"disk_format", string(p.DiskFormat)}, {"container_format", string(p.ContainerFormat)},
		}})
	}
	return rawJSON(encodePy(o, false))
}

// glanceTime is Glance's isotime(): seconds, UTC, Z.
func glanceTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// detail is the full task view, with Glance's key order.
func (v task) detail() object {
	var result any
	if v.imageID != "" {
		result = object{{"image_id", v.imageID}}
	}
	o := object{
		{"id", v.id}, {"input", v.input}, {"type", v.typ}, {"status", v.status}, {"owner", v.owner},
		{"message", v.message}, {"result", result},
		{"created_at", glanceTime(v.createdAt)}, {"updated_at", glanceTime(v.updatedAt)},
		{"self", "/v2/tasks/" + v.id}, {"schema", "/v2/schemas/task"},
	}
	for _, m := range []member{{"request_id", v.requestID}, {"user_id", v.userID}} {
		if m.value != "" {
			o = append(o, m)
		}
	}
	if v.expiresAt != nil {
		o = append(o, member{"expires_at", glanceTime(*v.expiresAt)})
	}
	return o
}

// stub is the list view of a task.
func (v task) stub() object {
	o := object{
		{"id", v.id}, {"type", v.typ}, {"status", v.status}, {"owner", v.owner},
		{"created_at", glanceTime(v.createdAt)}, {"updated_at", glanceTime(v.updatedAt)},
		{"self", "/v2/tasks/" + v.id}, {"schema", "/v2/schemas/task"},
	}
	if v.expiresAt != nil {
		o = append(o, member{"expires_at", glanceTime(*v.expiresAt)})
	}
	return o
}

// column is the value of a Glance task column, for sorting and filtering.
// Time columns are ordered by their times (see newRow), not by text.
func (v task) column(name string) string {
	switch name {
	case "id":
		return v.id
	case "type":
		return v.typ
	case "status":
		return v.status
	case "owner":
		return v.owner
	case "image_id":
		return v.imageID
	case "request_id":
		return v.requestID
	case "user_id":
		return v.userID
	case "deleted":
		return "0"
	}
	return "" // deleted_at: never set on a listed task
}
