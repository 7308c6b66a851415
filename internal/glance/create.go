package glance

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

const maxBody = 1 << 20

// create is POST /v2/tasks, validated in Glance's order: policy, body,
// required keys, schema, then import_from.
func (s *Server) create(w http.ResponseWriter, r *http.Request, id *Identity, _ string) {
	ctx := r.Context()
	if e := s.allowed(ctx, id, "create"); e != nil {
		e.write(w, r)
		return
	}
	body, e := readBody(r)
	if e != nil {
		e.write(w, r)
		return
	}
	typ, input, e := s.validate(ctx, body)
	if e != nil {
		e.write(w, r)
		return
	}
	if publicImage(input) {
		// Glance's legacy import does not ask publicize_image (its task
		// makes a public image for anyone let in): the shim does.
		if e := s.mayPublicize(ctx, id); e != nil {
			e.write(w, r)
			return
		}
	}
	ns, err := s.namespaceOf(ctx, id)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("mapping project %q to a namespace: %w", id.ProjectID, err))
		return
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		newError(http.StatusBadRequest, fmt.Sprintf("Project %s cannot have tasks here: its namespace would be %q, which is not a valid namespace name.", id.ProjectID, ns)).write(w, r)
		return
	}
	t := newTask(ns, typ, input, id, requestIDOf(ctx), time.Now())
	if msg := tooLarge(t); msg != "" {
		newError(http.StatusBadRequest, msg).write(w, r)
		return
	}
	img, err := s.createTaskImage(ctx, t, input)
	if err != nil {
		s.writeCreateError(w, r, id, ns, "Image", err)
		return
	}
	if err := s.Writer.Create(ctx, t); err != nil {
		if img != nil {
			// The task is not there to fill it: no queued image is left.
			if err := s.Writer.Delete(ctx, img, client.Preconditions{UID: &img.UID}); err != nil && !apierrors.IsNotFound(err) {
				s.Log.Error(err, "Deleting the image of a task that could not be created", "image", img.Namespace+"/"+img.Name)
			}
		}
		s.writeCreateError(w, r, id, ns, "ImageImportTask", err)
		return
	}
	s.Log.Info("Created ImageImportTask", "task", t.Namespace+"/"+t.Name, "id", t.UID, "project", id.ProjectID)
	view := taskOf(t, id.ProjectID)           // in the caller's namespace: resolveOwner's too
	view.status = string(tasksv1.TaskPending) // the 201 always shows the task as created
	w.Header().Set("Location", requestBase(r)+"/v2/tasks/"+view.id)
	s.writeJSON(w, http.StatusCreated, encodePy(view.detail(), false))
}

// writeCreateError answers a refused create of the task or its image.
func (s *Server) writeCreateError(w http.ResponseWriter, r *http.Request, id *Identity, ns, kind string, err error) {
	switch {
	case apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err):
		// What the API server refuses, retrying cannot fix: the caller's
		// 400, not a 500.
		s.Log.V(1).Info("Refused "+kind, "reason", err.Error())
		newError(http.StatusBadRequest, "The task cannot be stored: "+apiReason(err)).write(w, r)
	case apierrors.IsNotFound(err):
		// The project's namespace does not exist: no task can live there
		// until an administrator creates it.
		newError(http.StatusForbidden, fmt.Sprintf("Project %s cannot have tasks here: its namespace %q does not exist.", id.ProjectID, ns)).write(w, r)
	default:
		s.internalError(w, r, fmt.Errorf("creating %s: %w", kind, err))
	}
}

// createTaskImage creates the queued image a runnable import task fills,
// as Glance's legacy import creates its image: named by a new id, owned by
// the caller's project, with the task's image properties; and points the
// task at it. Glance deletes that image when the import fails: the task
// kills it, and the shim shows a killed image of a task as deleted. A task
// recorded as failed makes no image (Glance's fails before it makes one).
func (s *Server) createTaskImage(ctx context.Context, t *tasksv1.ImageImportTask, input any) (*tasksv1.Image, error) {
	p := t.Spec.Input.ImageProperties
	if t.Spec.RecordedFailure != nil || p == nil {
		return nil, nil
	}
	img := &tasksv1.Image{
		ObjectMeta: metav1.ObjectMeta{
			Name: uuid.NewString(), Namespace: t.Namespace,
			Labels: maps.Clone(t.Labels),
			Annotations: map[string]string{
				annotationOwner:      t.Annotations[annotationOwner],
				annotationCreatedAt:  t.Annotations[annotationCreatedAt],
				annotationLegacyTask: t.Name,
			},
		},
		Spec: tasksv1.ImageSpec{
			Name: p.Name, DiskFormat: p.DiskFormat, ContainerFormat: p.ContainerFormat,
			Visibility: cmp.Or(p.Visibility, "shared"), Protected: ptrDeref(p.Protected), Tags: p.Tags,
			MinDisk: ptrDeref(p.MinDisk), MinRAM: ptrDeref(p.MinRAM), Properties: p.Properties,
		},
	}
	in, _ := input.(object)
	raw, _ := in.get("image_properties")
	var order []string
	for _, m := range raw.(object) {
		if _, ok := p.Properties[m.key]; ok {
			order = append(order, m.key)
		}
	}
	setPropertyOrder(img, order)
	if err := s.Writer.Create(ctx, img); err != nil {
		return nil, err
	}
	s.Log.Info("Created Image", "image", img.Namespace+"/"+img.Name, "task", t.Name)
	t.Spec.Image = &tasksv1.ImageReference{Name: img.Name, OnFailure: tasksv1.ImageFailureKilled}
	t.Labels[LabelImageID] = img.Name
	return img, nil
}

func ptrDeref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// publicImage reports whether a task input asks for a public image.
func publicImage(input any) bool {
	in, _ := input.(object)
	raw, _ := in.get("image_properties")
	props, _ := raw.(object)
	v, _ := props.get("visibility")
	return v == "public"
}

// readBody parses the JSON body of a task as Glance's
// JSONRequestDeserializer.
func readBody(r *http.Request) (object, *httpError) {
	v, e := readBodyAny(r)
	if e != nil {
		return nil, e
	}
	switch v := v.(type) {
	case object:
		return v, nil
	case []any:
		return object{}, nil // a list has no 'type': Glance says so next
	}
	return nil, newError(http.StatusBadRequest, "Unexpected body type. Expected list/dict.")
}

// readBodyAny parses a JSON body as Glance's JSONRequestDeserializer. It
// parses while it reads: a body nested too deeply is refused without being
// read to its end.
func readBodyAny(r *http.Request) (any, *httpError) {
	chunked := slices.Contains(r.TransferEncoding, "chunked")
	if r.ContentLength <= 0 && !chunked {
		return nil, newError(http.StatusBadRequest, "Body expected in request.")
	}
	body := &io.LimitedReader{R: r.Body, N: maxBody + 1}
	v, err := parseOrderedFrom(body)
	switch {
	case errors.Is(err, errTooDeep):
		return nil, newError(http.StatusBadRequest, fmt.Sprintf("The JSON in the request body nests deeper than %d levels.", maxDepth))
	case err != nil || body.N == 0:
		return nil, newError(http.StatusBadRequest, "Malformed JSON in request body.")
	}
	return v, nil
}

// validate checks the body and returns the type and input.
func (s *Server) validate(ctx context.Context, body object) (string, any, *httpError) {
	typ, hasType := body.get("type")
	input, hasInput := body.get("input")
	switch {
	case !hasType:
		return "", nil, newError(http.StatusBadRequest, "Task 'type' is required")
	case !hasInput:
		return "", nil, newError(http.StatusBadRequest, "Task 'input' is required")
	}
	if e := validateTask(body); e != nil {
		return "", nil, e
	}
	typeName := typ.(string)
	if typeName == "import" {
		if e := s.checkImportFrom(ctx, input); e != nil {
			return "", nil, e
		}
	}
	return typeName, input, nil
}

// checkImportFrom applies Glance's create-time checks of input.import_from.
func (s *Server) checkImportFrom(ctx context.Context, input any) *httpError {
	in, _ := input.(object)
	v, _ := in.get("import_from")
	if isFalsy(v) {
		return newError(http.StatusBadRequest, "Invalid location: "+pyStr(v))
	}
	uri, ok := v.(string)
	if !ok {
		return newError(http.StatusInternalServerError, serverErrorText) // Glance: AttributeError
	}
	switch {
	case strings.HasPrefix(uri, "file:///") || strings.HasPrefix(uri, "filesystem:///"):
		return newError(http.StatusBadRequest, "File based imports are not allowed. Please use a non-local source of image data.")
	case !strings.HasPrefix(uri, "http://") && !strings.HasPrefix(uri, "https://"):
		return newError(http.StatusBadRequest, "The given uri is not valid. Please specify a valid uri from the following list of supported uri ['http']")
	}
	if err := s.passesFilter(ctx, uri); err != nil {
		s.Log.V(1).Info("Refused import_from", "reason", err.Error())
		return newError(http.StatusBadRequest, "URI for legacy import task does not pass filtering: "+uri)
	}
	return nil
}

// passesFilter is Glance's validate_import_uri, with our policy: a host
// name must also resolve.
func (s *Server) passesFilter(ctx context.Context, uri string) error {
	u, err := s.URLPolicy.CheckURL(uri)
	if err != nil {
		return err
	}
	if len(uri) > 2048 {
		return errors.New("the URL is longer than 2048 characters")
	}
	host := u.Hostname()
	if net.ParseIP(host) != nil {
		return nil
	}
	resolve := s.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, host string) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := net.DefaultResolver.LookupHost(ctx, host)
			return err
		}
	}
	if err := resolve(ctx, host); err != nil {
		return fmt.Errorf("%w: host %q does not resolve", urlpolicy.ErrRefused, host)
	}
	return nil
}

// isFalsy is Python truthiness of a JSON value.
func isFalsy(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case string:
		return v == ""
	case json.Number:
		f, _ := v.Float64()
		return f == 0
	case object:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

// pyStr is Python's str() of a JSON value in a %s format.
func pyStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return pyRepr(v)
}

// newTask builds the ImageImportTask of a Glance task. Glance expires the
// tasks it creates (spec.expiryPolicy Delete). An input Glance accepts and
// fails only when the task runs is recorded as failed (spec.recordedFailure,
// with Glance's message): the reconciler never runs it.
func newTask(namespace, typ string, input any, id *Identity, reqID string, now time.Time) *tasksv1.ImageImportTask {
	in, _ := input.(object)
	spec, problem := specOf(typ, in)
	spec.ExpiryPolicy = tasksv1.ExpiryPolicyDelete
	if problem != "" {
		spec.RecordedFailure = &tasksv1.RecordedFailure{Reason: reasonInvalidInput, Message: problem}
	}
	t := &tasksv1.ImageImportTask{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "task-" + uuid.NewString(),
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/created-by": "glance-shim"},
			Annotations: map[string]string{
				annotationInput:     string(encodePy(input, false)),
				annotationType:      typ,
				annotationOwner:     id.ProjectID,
				annotationCreatedAt: now.UTC().Format(preciseTime),
			},
		},
		Spec: spec,
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

// reasonInvalidInput is the condition reason of a task recorded as failed
// because Glance fails its input when it runs.
const reasonInvalidInput = "InvalidInput"

// specOf maps a Glance import input onto the spec, and returns Glance's
// run-time message for what the task cannot do.
func specOf(typ string, in object) (tasksv1.ImageImportTaskSpec, string) {
	importFrom, _ := in.get("import_from")
	spec := tasksv1.ImageImportTaskSpec{Type: tasksv1.TaskTypeImport}
	spec.Input.ImportFrom, _ = importFrom.(string)
	if typ != string(tasksv1.TaskTypeImport) {
		// Only import runs here; the other types fail as Glance fails them.
		spec.Input.ImportFrom = firstNonEmpty(spec.Input.ImportFrom, "http://invalid.invalid/")
		if len(in) == 0 {
			return spec, "Input to " + typ + " task is empty."
		}
		if _, ok := in.get("image_id"); !ok {
			return spec, "Missing required 'image_id' field"
		}
		return spec, "Task failed due to Internal Error"
	}
	for _, key := range []string{"import_from_format", "image_properties"} {
		if _, ok := in.get(key); !ok {
			return spec, "Input does not contain '" + key + "' field"
		}
	}
	format, _ := in.get("import_from_format")
	spec.Input.ImportFromFormat = tasksv1.DiskFormat(pyStr(format))
	if !validDiskFormat(string(spec.Input.ImportFromFormat)) {
		spec.Input.ImportFromFormat = ""
		return spec, fmt.Sprintf("Invalid import_from_format %s: use one of %s.", pyRepr(format), strings.Join(diskFormats, ", "))
	}
	props, problem := imagePropertiesOf(in)
	if problem != "" {
		return spec, problem
	}
	spec.Input.ImageProperties = props
	return spec, ""
}

var (
	diskFormats      = []string{"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
	containerFormats = []string{"ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"}
	visibilities     = []string{"public", "private", "shared", "community"}
)

func validDiskFormat(f string) bool { return slices.Contains(diskFormats, f) }

// imagePropertiesOf maps image_properties; base properties of the wrong
// type are kept as extra properties rather than refused.
func imagePropertiesOf(in object) (*tasksv1.ImageProperties, string) {
	raw, _ := in.get("image_properties")
	props, _ := raw.(object)
	disk, hasDisk := props.get("disk_format")
	container, hasContainer := props.get("container_format")
	d, _ := disk.(string)
	c, _ := container.(string)
	switch {
	case !hasDisk || !hasContainer:
		return nil, "Properties disk_format, container_format must be set prior to saving data."
	case !validDiskFormat(d):
		return nil, fmt.Sprintf("Invalid disk_format %s: use one of %s.", pyRepr(disk), strings.Join(diskFormats, ", "))
	case !slices.Contains(containerFormats, c):
		return nil, fmt.Sprintf("Invalid container_format %s: use one of %s.", pyRepr(container), strings.Join(containerFormats, ", "))
	}
	p := &tasksv1.ImageProperties{DiskFormat: tasksv1.DiskFormat(d), ContainerFormat: tasksv1.ContainerFormat(c)}
	for _, m := range props {
		switch v := m.value; m.key {
		case "disk_format", "container_format":
		case "name":
			if s, ok := v.(string); ok && len(s) <= 255 {
				p.Name = s
				continue
			}
			setExtra(p, m)
		case "visibility":
			if s, ok := v.(string); ok && slices.Contains(visibilities, s) {
				p.Visibility = tasksv1.Visibility(s)
				continue
			}
			setExtra(p, m)
		case "min_disk", "min_ram":
			n, ok := v.(json.Number)
			i, err := n.Int64()
			if !ok || err != nil || i < 0 || i > 1<<31-1 {
				setExtra(p, m)
				continue
			}
			if m.key == "min_disk" {
				p.MinDisk = ptrTo(int32(i))
			} else {
				p.MinRAM = ptrTo(int32(i))
			}
		case "protected":
			if b, ok := v.(bool); ok {
				p.Protected = &b
				continue
			}
			setExtra(p, m)
		case "tags":
			tags, _ := v.([]any)
			for _, tag := range tags {
				if s, ok := tag.(string); ok && s != "" && len(s) <= 255 && !slices.Contains(p.Tags, s) && len(p.Tags) < 128 {
					p.Tags = append(p.Tags, s)
				}
			}
		default:
			setExtra(p, m)
		}
	}
	return p, ""
}

func setExtra(p *tasksv1.ImageProperties, m member) {
	if p.Properties == nil {
		p.Properties = map[string]string{}
	}
	if s, ok := m.value.(string); ok {
		p.Properties[m.key] = s
	} else {
		p.Properties[m.key] = string(encodePy(m.value, false))
	}
}

func ptrTo[T any](v T) *T { return &v }

// The most an ImageImportTask's free-form image properties hold (its CRD's
// rules): how many, and how long a key and a value, in characters.
const (
	maxProperties        = 128
	maxPropertyKeyLength = 255
	maxPropertyLength    = 65535
)

// tooLarge is why a task cannot be stored, as a 400 explains it, or "": an
// image property longer than the CRD allows, or an input bigger than the
// annotations of one object may be.
func tooLarge(t *tasksv1.ImageImportTask) string {
	if p := t.Spec.Input.ImageProperties; p != nil {
		if n := len(p.Properties); n > maxProperties {
			return fmt.Sprintf("The image has %d extra properties; at most %d fit.", n, maxProperties)
		}
		for _, k := range slices.Sorted(maps.Keys(p.Properties)) {
			if n := utf8.RuneCountInString(k); n > maxPropertyKeyLength {
				return fmt.Sprintf("Image property name %s is %d characters long; at most %d fit.", pyRepr(k), n, maxPropertyKeyLength)
			}
			if n := utf8.RuneCountInString(p.Properties[k]); n > maxPropertyLength {
				return fmt.Sprintf("Image property %s is %d characters long; at most %d fit.", pyRepr(k), n, maxPropertyLength)
			}
		}
	}
	size := 0
	for k, v := range t.Annotations {
		size += len(k) + len(v)
	}
	if size > apivalidation.TotalAnnotationSizeLimitB {
		return fmt.Sprintf("Task input is too large: %d bytes; at most %d fit.",
			len(t.Annotations[annotationInput]), apivalidation.TotalAnnotationSizeLimitB-(size-len(t.Annotations[annotationInput])))
	}
	return ""
}

// apiReason is what the API server said is wrong with an object, without
// the object's kind and name.
func apiReason(err error) string {
	msg := err.Error()
	if _, reason, ok := strings.Cut(msg, " is invalid: "); ok {
		return reason
	}
	return msg
}
