package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// storeClaimOf is the claim that holds an Image's data, from its location
// (pvc://namespace/claim/id); fallback when the location names none in the
// image's namespace.
func storeClaimOf(img *tasksv1.Image, fallback string) string {
	rest, ok := strings.CutPrefix(img.Status.Location, "pvc://"+img.Namespace+"/")
	if !ok {
		return fallback
	}
	claim, file, ok := strings.Cut(rest, "/")
	if !ok || claim == "" || file != img.Name {
		return fallback
	}
	return claim
}

// desiredCleanupJob builds the Job that removes an Image's data from the
// store. It is pure: the reconciler sets the owner reference.
func desiredCleanupJob(img *tasksv1.Image, cfg ImporterConfig) *batchv1.Job {
	labels := map[string]string{
		"app.kubernetes.io/name":       "image-cleanup",
		"app.kubernetes.io/managed-by": "image-import-operator",
		tasksv1.LabelImageID:           img.Name,
	}
	small := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: cleanupJobName(img), Namespace: img.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](2),
			ActiveDeadlineSeconds: ptr.To[int64](600),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false), // it talks to no API
					EnableServiceLinks:           ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](importerUID),
						RunAsGroup:     ptr.To[int64](importerUID),
						FSGroup:        ptr.To[int64](importerUID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:                     "remove",
						Image:                    cfg.Image,
						ImagePullPolicy:          cfg.PullPolicy,
						Args:                     []string{"remove", "--dest=" + storeMountPath, "--image-id=" + img.Name},
						Resources:                corev1.ResourceRequirements{Requests: small, Limits: small},
						VolumeMounts:             []corev1.VolumeMount{{Name: "store", MountPath: storeMountPath}},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: []corev1.Volume{{Name: "store", VolumeSource: corev1.VolumeSource{
						PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: storeClaimOf(img, cfg.StoreClaimName)},
					}}},
				},
			},
		},
	}
}
