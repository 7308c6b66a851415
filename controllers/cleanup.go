package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// The data of a deleted Image is removed by a small Job in the Image's
// namespace, which mounts the store claim and runs `importer remove`: the
// manager never mounts the store. The Job runs the importer image, with
// the importer's pod security, and no service account token.

// cleanupJobName is the name of the Job that removes an Image's data: the
// image's name, cut to fit, and a hash of its UID, so that an Image
// recreated under the same name never adopts its predecessor's Job.
func cleanupJobName(img *tasksv1.Image) string {
	sum := sha256.Sum256([]byte(img.UID))
	suffix := hex.EncodeToString(sum[:4])
	prefix := "delete-" + img.Name
	if limit := 63 - len(suffix) - 1; len(prefix) > limit {
		prefix = strings.TrimRight(prefix[:limit], "-.")
	}
	return prefix + "-" + suffix
}

// freeJobName is the name of the Job that removes what the import of a
// task deleted before the image was settled may have written. It differs
// from cleanupJobName, and from one claim of the image to the next (the
// task's name and UID, and the time of the claim): a Job of an earlier
// claim, complete, never passes for this one's.
func freeJobName(img *tasksv1.Image) string {
	claimed := ""
	if t := img.Status.UpdatedAt; t != nil {
		claimed = t.UTC().Format(time.RFC3339)
	}
	sum := sha256.Sum256([]byte(string(img.UID) + "/" + img.Status.ImportTask + "/" + string(img.Status.ImportTaskUID) + "/" + claimed))
	suffix := hex.EncodeToString(sum[:4])
	prefix := "free-" + img.Name
	if limit := 63 - len(suffix) - 1; len(prefix) > limit {
		prefix = strings.TrimRight(prefix[:limit], "-.")
	}
	return prefix + "-" + suffix
}

// cleanupTarget is what a cleanup Job removes: a file of the store claim,
// and its staging files.
type cleanupTarget struct{ claim, file string }

// storeFileID is what the importer accepts as an image id, and so as a
// file of the store (cmd/importer's safeImageID).
var storeFileID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// cleanupTargetOf is exactly the claim and file that the image's location
// names (pvc://<namespace>/<claim>/<file>), which downloads read; the
// default claim and the image's name when it has no location (an import
// that never finished may have written there). refused says why the
// location is not the image's to clean: another namespace's store, or not
// a file of a store at all. The cleanup never falls back to another file
// than the one the image's data is.
func cleanupTargetOf(img *tasksv1.Image, defaultClaim string) (target cleanupTarget, refused string) {
	loc := img.Status.Location
	if loc == "" {
		return cleanupTarget{claim: defaultClaim, file: img.Name}, ""
	}
	parts := strings.Split(strings.TrimPrefix(loc, "pvc://"), "/")
	switch {
	case !strings.HasPrefix(loc, "pvc://") || len(parts) != 3:
		return cleanupTarget{}, fmt.Sprintf("location %q is not a file of a store (pvc://<namespace>/<claim>/<id>)", loc)
	case parts[0] != img.Namespace:
		return cleanupTarget{}, fmt.Sprintf("location %q is in namespace %q, not in the image's own (%s): "+
			"its data is not this image's to remove", loc, parts[0], img.Namespace)
	case len(validation.IsDNS1123Subdomain(parts[1])) > 0:
		return cleanupTarget{}, fmt.Sprintf("location %q names no valid claim", loc)
	case !storeFileID.MatchString(parts[2]):
		return cleanupTarget{}, fmt.Sprintf("location %q names no valid image file", loc)
	}
	return cleanupTarget{claim: parts[1], file: parts[2]}, ""
}

// desiredCleanupJob builds the Job, named name, that removes the target
// file of an Image's data from the store. It is pure: the reconciler sets
// the owner reference.
func desiredCleanupJob(img *tasksv1.Image, name string, target cleanupTarget, cfg ImporterConfig) *batchv1.Job {
	labels := map[string]string{
		"app.kubernetes.io/name":       "image-cleanup",
		"app.kubernetes.io/managed-by": "image-import-operator",
		tasksv1.LabelImageID:           img.Name,
	}
	small := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: img.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](2),
			ActiveDeadlineSeconds: ptr.To[int64](600),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false), // it talks to no API
					EnableServiceLinks:           ptr.To(false),
					SecurityContext:              importerPodSecurity(),
					Containers: []corev1.Container{{
						Name:                     "remove",
						Image:                    cfg.Image,
						ImagePullPolicy:          cfg.PullPolicy,
						Args:                     []string{"remove", "--dest=" + storeMountPath, "--image-id=" + target.file},
						Resources:                corev1.ResourceRequirements{Requests: small, Limits: small},
						VolumeMounts:             []corev1.VolumeMount{{Name: "store", MountPath: storeMountPath}},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext:          importerContainerSecurity(),
					}},
					Volumes: []corev1.Volume{{Name: "store", VolumeSource: corev1.VolumeSource{
						PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: target.claim},
					}}},
				},
			},
		},
	}
}
