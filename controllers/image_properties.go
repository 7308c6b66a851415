package controllers

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// The properties an import adds to its image: what an OVA's OVF descriptor
// says of the appliance, as Glance's OVF processing adds what it reads to
// the image's extra properties. Unlike Glance, a property the image has
// already is its owner's and is never replaced.

// The limits of an Image's spec.properties (its CRD's rules): how many,
// and how long a value, in characters. Keys are at most 255 characters;
// the ones added here are short names of ours.
const (
	maxImageProperties     = 128
	maxImagePropertyLength = 65535
)

// imageProperty is one extra property of an image.
type imageProperty struct{ key, value string }

// ovfProperties are the image properties an OVF descriptor gives, in a
// fixed order: named as Glance names what its OVF processing reads (where
// it comes from, an underscore, the element), ovf_name for the virtual
// system's name and the others for its ProductSection.
func ovfProperties(u *tasksv1.UnpackedSource) []imageProperty {
	if u == nil {
		return nil
	}
	var props []imageProperty
	for _, p := range []imageProperty{
		{"ovf_name", u.OVFName}, {"ovf_product", u.OVFProduct}, {"ovf_vendor", u.OVFVendor}, {"ovf_version", u.OVFVersion},
	} {
		if p.value != "" {
			props = append(props, p)
		}
	}
	return props
}

// propertyAddition is what addProperties did: the keys it added, those the
// image had already with another value (kept), and what the limits left
// out or shortened, each with why.
type propertyAddition struct {
	added, kept, limited []string
}

// addProperties adds props to the properties of spec, as far as the CRD's
// limits allow: a property the image has keeps its value, a value too long
// is shortened, and what finds no room is left out. A property present
// with the same value (an earlier reconcile's) counts as neither.
func addProperties(spec *tasksv1.ImageSpec, props []imageProperty) propertyAddition {
	var did propertyAddition
	for _, p := range props {
		have, ok := spec.Properties[p.key]
		switch {
		case ok && have == p.value:
		case ok:
			did.kept = append(did.kept, p.key)
		case len(spec.Properties) >= maxImageProperties:
			did.limited = append(did.limited, fmt.Sprintf("%s left out (the image has %d properties, the most it may have)", p.key, maxImageProperties))
		default:
			value := p.value
			if utf8.RuneCountInString(value) > maxImagePropertyLength {
				value = shortenRunes(value, maxImagePropertyLength)
				did.limited = append(did.limited, fmt.Sprintf("%s shortened to %d characters", p.key, maxImagePropertyLength))
			}
			if spec.Properties == nil {
				spec.Properties = map[string]string{}
			}
			spec.Properties[p.key] = value
			did.added = append(did.added, p.key)
		}
	}
	return did
}

// shortenRunes cuts s to n characters, the last an ellipsis.
func shortenRunes(s string, n int) string {
	i := 0
	for at := range s {
		if i == n-1 {
			return s[:at] + "…"
		}
		i++
	}
	return s
}

// events are the Events that tell what was added and what was not.
func (did propertyAddition) events(task string) []*imageEvent {
	var events []*imageEvent
	var parts []string
	if len(did.added) > 0 {
		parts = append(parts, "added "+strings.Join(did.added, ", "))
	}
	if len(did.kept) > 0 {
		parts = append(parts, "kept the image's own "+strings.Join(did.kept, ", "))
	}
	if len(parts) > 0 {
		events = append(events, &imageEvent{reason: "PropertiesAdded", note: truncate(
			"Image properties from the OVF descriptor of task "+task+": "+strings.Join(parts, "; "), 1024)})
	}
	if len(did.limited) > 0 {
		events = append(events, &imageEvent{warning: true, reason: "PropertiesLimited", note: truncate(
			"Image properties from the OVF descriptor of task "+task+" do not all fit: "+strings.Join(did.limited, "; "), 1024)})
	}
	return events
}

// activates reports whether settleImport makes the image active: the
// import that claimed it succeeded.
func activates(img *tasksv1.Image, task *tasksv1.ImageImportTask) bool {
	return img.DeletionTimestamp.IsZero() && img.Status.Status == tasksv1.ImageImporting &&
		claimedBy(img, task) && task.Status.Status == tasksv1.TaskSuccess && task.Status.Image != nil
}

// addImportedProperties adds what the import's OVF descriptor says to the
// image's properties, ahead of the status that makes the image active: a
// crash between the two writes loses nothing, and the next reconcile finds
// them there and adds nothing. Once the image is active this no longer
// runs: a property its owner changes or removes stays so. A write the API
// server refuses (invalid, or forbidden by an admission policy) leaves the
// properties out, with a Warning, rather than keep the image from becoming
// active; a conflict is retried with the image read again.
func (r *ImageReconciler) addImportedProperties(ctx context.Context, w *imageWrite, task *tasksv1.ImageImportTask) error {
	props := ovfProperties(task.Status.Image.Unpacked)
	if len(props) == 0 {
		return nil
	}
	spec := w.img.Spec.DeepCopy()
	did := addProperties(spec, props)
	if len(did.added) > 0 {
		err := w.patchSpec(ctx, spec)
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			w.note(&imageEvent{warning: true, reason: "PropertiesLimited", note: truncate(fmt.Sprintf(
				"Image properties from the OVF descriptor of task %s not added: %v", task.Name, err), 1024)})
			return nil
		}
		if err != nil {
			return fmt.Errorf("adding the OVF's image properties: %w", err)
		}
	}
	for _, e := range did.events(task.Name) {
		w.note(e)
	}
	return nil
}

// patchSpec writes spec as the image's spec, ahead of its status: the spec
// is another request than the status subresource flush writes, with the
// same optimistic lock. The image and the base of the status patch then
// carry the new resourceVersion and generation; the status computed so
// far stays unwritten until flush.
func (w *imageWrite) patchSpec(ctx context.Context, spec *tasksv1.ImageSpec) error {
	patched := w.before.DeepCopy()
	patched.Spec = *spec
	if err := w.r.Patch(ctx, patched, client.MergeFromWithOptions(w.before, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	w.img.ObjectMeta, w.img.Spec = *patched.ObjectMeta.DeepCopy(), *patched.Spec.DeepCopy()
	w.before.ObjectMeta, w.before.Spec = patched.ObjectMeta, patched.Spec
	return nil
}
