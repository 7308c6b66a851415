package glance

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// What the shim keeps on an Image besides its spec: what Glance's image
// record has and the Image kind does not.
const (
	// annotationPropertyOrder lists the image's extra property names in
	// the order Glance first stored them (deleted ones included: Glance
	// reuses a property's row when it is set again), as a JSON array.
	// Glance shows extra properties in that order.
	annotationPropertyOrder = "tasks.imageimport.io/glance-property-order"
	// annotationOSHidden is Glance's os_hidden ("true" when set).
	annotationOSHidden = "tasks.imageimport.io/os-hidden"
	// annotationUpdatedAt is when the shim last changed the image, to the
	// nanosecond (preciseTime).
	annotationUpdatedAt = "tasks.imageimport.io/updated-at"
	// annotationLegacyTask names the task of POST /v2/tasks that made the
	// image. Glance deletes such an image when its import fails; the shim
	// shows it killed as deleted, and without the interoperable import's
	// bookkeeping.
	annotationLegacyTask = "tasks.imageimport.io/glance-legacy-task"
	// LabelImageID marks a task with the id of the image it imports into
	// (the controller sets it too).
	LabelImageID = "tasks.imageimport.io/image-id"
)

// indexImageName indexes Images by metadata.name, their Glance id, across
// namespaces.
const indexImageName = "glance.image-id"

// glanceImage is an Image with what its Glance view needs besides it.
type glanceImage struct {
	obj *tasksv1.Image
	// ownerID is the image's owner as the shim trusts it (resolveOwner).
	ownerID string
	// importTaskID is the Glance id of the task importing into the image
	// right now, if any.
	importTaskID string
}

func (g glanceImage) owner() string { return g.ownerID }

// owns reports whether the caller's project owns the image.
func (g glanceImage) owns(id *Identity) bool { return g.ownerID != "" && g.ownerID == id.ProjectID }

// imageOf is the Glance view's image of an Image.
func (s *Server) imageOf(ctx context.Context, img *tasksv1.Image) (glanceImage, error) {
	owner, err := s.resolveOwner(ctx, img)
	return glanceImage{obj: img, ownerID: owner}, err
}
func (g glanceImage) status() string {
	if g.legacy() && g.obj.Status.Status == tasksv1.ImageImporting {
		return "saving" // the legacy import uploads, as image data PUT does
	}
	return firstNonEmpty(string(g.obj.Status.Status), string(tasksv1.ImageQueued))
}

// legacy reports whether a task of POST /v2/tasks made the image.
func (g glanceImage) legacy() bool { return g.obj.Annotations[annotationLegacyTask] != "" }

// gone reports whether Glance has deleted the image: it is being deleted,
// or its legacy import failed.
func (g glanceImage) gone() bool {
	return g.obj.DeletionTimestamp != nil || (g.legacy() && g.obj.Status.Status == tasksv1.ImageKilled)
}
func (g glanceImage) id() string { return g.obj.Name }

// diskFormat is the format the data is stored in once there is data (a
// converting import changes it, as Glance's image_conversion plugin
// does), the one asked for until then.
func (g glanceImage) diskFormat() string {
	return string(cmp.Or(g.obj.Status.DiskFormat, g.obj.Spec.DiskFormat))
}

// containerFormat is, likewise, bare for the disk taken out of an OVA.
func (g glanceImage) containerFormat() string {
	return string(cmp.Or(g.obj.Status.ContainerFormat, g.obj.Spec.ContainerFormat))
}
func (g glanceImage) hidden() bool { return g.obj.Annotations[annotationOSHidden] == "true" }
func (g glanceImage) visibility() string {
	return firstNonEmpty(string(g.obj.Spec.Visibility), "shared")
}

// propertyOrder is the image's extra property names in Glance's order.
func (g glanceImage) propertyOrder() []string {
	var stored []string
	json.Unmarshal([]byte(g.obj.Annotations[annotationPropertyOrder]), &stored)
	var out []string
	for _, k := range stored {
		if _, ok := g.obj.Spec.Properties[k]; ok && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	var rest []string
	for k := range g.obj.Spec.Properties {
		if !slices.Contains(out, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest) // properties set with kubectl: no order was recorded
	return append(out, rest...)
}

// createdAt is the precise creation time of the image.
func (g glanceImage) createdAt() time.Time {
	if t, err := time.Parse(preciseTime, g.obj.Annotations[annotationCreatedAt]); err == nil {
		return t
	}
	return g.obj.CreationTimestamp.Time
}

// updatedAt is the last change of the image, by the shim or the operator.
func (g glanceImage) updatedAt() time.Time {
	t := g.createdAt()
	if u, err := time.Parse(preciseTime, g.obj.Annotations[annotationUpdatedAt]); err == nil && u.After(t) {
		t = u
	}
	if u := g.obj.Status.UpdatedAt; u != nil && u.After(t) {
		t = u.Time
	}
	return t
}

// view is Glance's image view (ResponseSerializer._format_image): extra
// properties first, then the base attributes in Glance's order.
func (g glanceImage) view() object {
	return g.viewWithOrder(g.propertyOrder())
}

func (g glanceImage) viewWithOrder(order []string) object {
	img, st := g.obj, g.obj.Status
	var o object
	if g.importTaskID != "" {
		o = append(o, member{"os_glance_import_task", g.importTaskID})
	}
	if st.ImportTask != "" && g.importTaskID == "" && !g.legacy() {
		// Glance's import flow leaves these behind once it has run.
		o = append(o, member{"os_glance_importing_to_stores", ""}, member{"os_glance_failed_import", ""})
	}
	for _, k := range order {
		o = append(o, member{k, img.Spec.Properties[k]})
	}
	o = append(o,
		member{"name", nullIfEmpty(img.Spec.Name)},
		member{"disk_format", nullIfEmpty(g.diskFormat())},
		member{"container_format", nullIfEmpty(g.containerFormat())},
		member{"visibility", g.visibility()},
		member{"size", nullInt(st.Size)},
		member{"virtual_size", nullInt(st.VirtualSize)},
		member{"status", g.status()},
		member{"checksum", nullIfEmpty(st.Checksum)},
		member{"protected", img.Spec.Protected},
		member{"min_ram", int64(img.Spec.MinRAM)},
		member{"min_disk", int64(img.Spec.MinDisk)},
		member{"owner", nullIfEmpty(g.owner())},
		member{"os_hidden", g.hidden()},
		member{"os_hash_algo", nullIfEmpty(st.OSHashAlgo)},
		member{"os_hash_value", nullIfEmpty(st.OSHashValue)},
		member{"id", g.id()},
		member{"created_at", glanceTime(g.createdAt())},
		member{"updated_at", glanceTime(g.updatedAt())},
		member{"tags", stringsAny(img.Spec.Tags)},
		member{"self", "/v2/images/" + g.id()},
		member{"file", "/v2/images/" + g.id() + "/file"},
		member{"schema", "/v2/schemas/image"},
	)
	return o
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func stringsAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// canSee is Glance's image visibility: admins see every image; others
// their project's, and public and community ones. The shim has no image
// members, so a shared image is its owner's only.
func (s *Server) canSee(ctx context.Context, id *Identity, g glanceImage) bool {
	switch {
	case g.owns(id):
		return true
	case g.visibility() == "public" || g.visibility() == "community":
		return true
	}
	return s.Auth.SeesAll(ctx, id)
}

// canModify is Glance's modify_image: the owner or an admin.
func (s *Server) canModify(ctx context.Context, id *Identity, g glanceImage) bool {
	return g.owns(id) || s.Auth.SeesAll(ctx, id)
}

// findImage returns the image with the Glance id that the caller may see,
// or nil. The caller's own namespace comes first, read from the API server
// (so that a client reads what it has just written). Otherwise the oldest
// Image with the id is the image (ids are random: an Image with a known id
// made later, in another namespace, is a copy), and a copy never stands in
// for an original the caller may not see.
func (s *Server) findImage(ctx context.Context, id *Identity, imageID string) (*glanceImage, error) {
	imageID = strings.ToLower(imageID)
	own, err := s.namespaceOf(ctx, id)
	if err != nil {
		own = "" // no namespace of its own: every Image is another's
	} else {
		var img tasksv1.Image
		err := s.reader().Get(ctx, client.ObjectKey{Namespace: own, Name: imageID}, &img)
		switch {
		case err == nil:
			return s.imageIfVisible(ctx, id, &img)
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	var list tasksv1.ImageList
	if err := s.Cache.List(ctx, &list, client.MatchingFields{indexImageName: imageID}); err != nil {
		return nil, err
	}
	// The API server has just said the own namespace has no such Image:
	// the cache's copy there is one it has not yet seen deleted.
	others := slices.DeleteFunc(list.Items, func(img tasksv1.Image) bool { return img.Namespace == own })
	if len(others) == 0 {
		return nil, nil
	}
	oldest := slices.MinFunc(others, olderImage)
	return s.imageIfVisible(ctx, id, &oldest)
}

// olderImage orders Images with the same id: the oldest first, by
// creation time, then UID.
func olderImage(a, b tasksv1.Image) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(string(a.UID), string(b.UID))
}

func (s *Server) imageIfVisible(ctx context.Context, id *Identity, img *tasksv1.Image) (*glanceImage, error) {
	g, err := s.imageOf(ctx, img)
	if err != nil {
		return nil, err
	}
	if g.gone() || !s.canSee(ctx, id, g) {
		return nil, nil
	}
	if err := s.fillImportTask(ctx, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// fillImportTask finds the task importing into the image now, if any.
func (s *Server) fillImportTask(ctx context.Context, g *glanceImage) error {
	if g.legacy() {
		return nil // Glance's legacy import is no import task of the image
	}
	if g.obj.Status.Status != tasksv1.ImageImporting && g.obj.Status.ImportTask == "" {
		tasks, err := s.imageTasks(ctx, g.obj)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if t.Status.Status != tasksv1.TaskSuccess && t.Status.Status != tasksv1.TaskFailure {
				g.importTaskID = string(t.UID)
			}
		}
		return nil
	}
	if g.obj.Status.Status != tasksv1.ImageImporting {
		return nil
	}
	if uid := g.obj.Status.ImportTaskUID; uid != "" {
		g.importTaskID = string(uid) // the claimant, not a task of its name made since
		return nil
	}
	var t tasksv1.ImageImportTask // a claim of a release that recorded no UID
	if err := s.Cache.Get(ctx, client.ObjectKey{Namespace: g.obj.Namespace, Name: g.obj.Status.ImportTask}, &t); err == nil {
		g.importTaskID = string(t.UID)
	}
	return nil
}

// imageTasks are the tasks of an image, oldest first.
func (s *Server) imageTasks(ctx context.Context, img *tasksv1.Image) ([]tasksv1.ImageImportTask, error) {
	var list tasksv1.ImageImportTaskList
	if err := s.Cache.List(ctx, &list, client.InNamespace(img.Namespace), client.MatchingLabels{LabelImageID: img.Name}); err != nil {
		return nil, err
	}
	slices.SortFunc(list.Items, func(a, b tasksv1.ImageImportTask) int { return strings.Compare(createdAt(&a), createdAt(&b)) })
	return list.Items, nil
}

// reader reads objects fresh from the API server when one is configured.
func (s *Server) reader() client.Reader {
	if s.APIReader != nil {
		return s.APIReader
	}
	return s.Cache
}
