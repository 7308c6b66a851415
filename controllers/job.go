package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// ImporterConfig is how the manager runs importer pods; it comes from the
// manager's flags.
type ImporterConfig struct {
	// Image of the importer.
	Image string
	// PullPolicy of the importer image.
	PullPolicy corev1.PullPolicy
	// StoreClaimName is the PersistentVolumeClaim, in the task's namespace,
	// that holds the image store.
	StoreClaimName string
	// Resources of the importer container (qemu-img included).
	Resources corev1.ResourceRequirements
	// ScratchSize bounds the emptyDir used for format conversion.
	ScratchSize resource.Quantity
	// Limits bound every import.
	Limits ImportLimits
	// Args are appended to the importer's command line, for the URL
	// policy (--allowed-hosts=...) and other site settings.
	Args []string
	// Destination is where tasks that name none store their image, and the
	// defaults of volumes and of the store claims the operator creates.
	Destination DestinationDefaults
	// Placement is the default placement of importer pods.
	Placement PlacementDefaults
}

// ImportLimits are the importer's bounds, set by the manager so that a
// cluster's administrator, not each task, decides them. Zero leaves the
// importer's own default.
type ImportLimits struct {
	MaxImageSize    int64  // bytes downloaded
	MaxVirtualSize  int64  // bytes of virtual disk, which bounds what qemu-img may write
	MinTransferRate int64  // bytes per second, averaged over a minute
	Sandbox         string // how qemu-img is confined: auto or required
}

// args are the limits as importer flags.
func (l ImportLimits) args() []string {
	var args []string
	for flag, v := range map[string]int64{"--max-image-size": l.MaxImageSize, "--max-virtual-size": l.MaxVirtualSize, "--min-transfer-rate": l.MinTransferRate} {
		if v > 0 {
			args = append(args, flag+"="+strconv.FormatInt(v, 10))
		}
	}
	slices.Sort(args) // a stable pod spec
	if l.Sandbox != "" {
		args = append(args, "--sandbox="+l.Sandbox)
	}
	return args
}

// Paths inside the importer pod.
const (
	storeMountPath       = "/var/lib/image-store"
	scratchMountPath     = "/tmp"
	credentialsMountPath = "/var/run/secrets/imageimport/credentials"
	caBundleMountPath    = "/var/run/secrets/imageimport/ca"
	caBundleKey          = "ca.crt"
	importerContainer    = "importer"
	importerUID          = 65532 // "nonroot" in distroless images
)

// imageNamespace seeds image ids, so that a task always names the same image
// and a retried import overwrites its own earlier attempt, never another's.
var imageNamespace = uuid.MustParse("5c0b5a4e-3f2d-4a4e-9c1b-7d1f3f0e6a10")

// imageID is the Glance image id of the Image a task without spec.image
// creates (taskImageID is the id of any task's image).
func imageID(t *tasksv1.ImageImportTask) string {
	return uuid.NewSHA1(imageNamespace, []byte(t.UID)).String()
}

// jobName is the task's Job name: the task name, cut to fit, and a hash of
// the task UID, so that a task recreated under the same name never adopts
// the Job of its predecessor. The name is the lock that keeps one Job per
// task: a second Create of it fails with AlreadyExists.
func jobName(t *tasksv1.ImageImportTask) string {
	sum := sha256.Sum256([]byte(t.UID))
	suffix := hex.EncodeToString(sum[:4])
	prefix := t.Name
	// 63: the Job name becomes a label value on its pods.
	if limit := 63 - len(suffix) - 1; len(prefix) > limit {
		prefix = strings.TrimRight(prefix[:limit], "-.")
	}
	return prefix + "-" + suffix
}

// storeLocation is where a task's image lands, as a URL users can read.
func storeLocation(t *tasksv1.ImageImportTask, claim string) string {
	return "pvc://" + t.Namespace + "/" + claim + "/" + taskImageID(t)
}

// desiredJob builds the Job that runs a task's import. It is pure: the
// reconciler sets the owner reference and creates it.
func desiredJob(t *tasksv1.ImageImportTask, cfg ImporterConfig) *batchv1.Job {
	labels := map[string]string{
		"app.kubernetes.io/name":       "image-importer",
		"app.kubernetes.io/managed-by": "image-import-operator",
		tasksv1.LabelTaskName:          truncateLabel(t.Name),
		tasksv1.LabelTaskUID:           string(t.UID),
		tasksv1.LabelImageID:           taskImageID(t),
	}
	volumes, mounts, devices := importerVolumes(t, cfg)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: jobName(t), Namespace: t.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To(ptr.Deref(t.Spec.BackoffLimit, 3)),
			ActiveDeadlineSeconds: ptr.To(ptr.Deref(t.Spec.ActiveDeadlineSeconds, 3600)),
			PodReplacementPolicy:  ptr.To(batchv1.Failed), // one importer pod at a time writes the image
			PodFailurePolicy:      podFailurePolicy(),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					// The token of the import's own service account, which may
					// patch this task's status (progress) and nothing else.
					ServiceAccountName:           jobName(t),
					AutomountServiceAccountToken: ptr.To(true),
					EnableServiceLinks:           ptr.To(false),
					SecurityContext:              importerPodSecurity(),
					Containers: []corev1.Container{{
						Name:            importerContainer,
						Image:           cfg.Image,
						ImagePullPolicy: cfg.PullPolicy,
						Args:            slices.Concat(importerArgs(t), destinationArgs(t, cfg), cfg.Limits.args(), cfg.Args),
						Resources:       cfg.Resources,
						VolumeMounts:    mounts,
						VolumeDevices:   devices,
						// The importer writes its JSON result there; a crash
						// before that leaves the log tail for the message.
						TerminationMessagePath:   corev1.TerminationMessagePathDefault,
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext:          importerContainerSecurity(),
					}},
					Volumes: volumes,
				},
			},
		},
	}
	applyImporterPod(&job.Spec.Template.Spec, t, cfg)
	return job
}

// importerPodSecurity is restricted Pod Security for the operator's own
// pods (importer and cleanup): non-root as the importer image's user,
// RuntimeDefault seccomp.
func importerPodSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](importerUID),
		RunAsGroup:     ptr.To[int64](importerUID),
		FSGroup:        ptr.To[int64](importerUID),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// importerContainerSecurity is the restricted container side: no
// privilege escalation, no capabilities, a read-only root filesystem.
func importerContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// importerAccess is the service account an import runs as, with a Role that
// lets it patch the status of its own task, and nothing else: how the
// importer pushes its progress.
func importerAccess(t *tasksv1.ImageImportTask) (*corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding) {
	meta := metav1.ObjectMeta{Name: jobName(t), Namespace: t.Namespace, Labels: map[string]string{tasksv1.LabelTaskUID: string(t.UID)}}
	sa := &corev1.ServiceAccount{ObjectMeta: meta}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{tasksv1.GroupVersion.Group}, Resources: []string{"imageimporttasks/status"},
		ResourceNames: []string{t.Name}, Verbs: []string{"get", "patch"},
	}}}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: t.Namespace}},
	}
	return sa, role, binding
}

// podFailurePolicy fails the Job at once when the importer reports a
// permanent failure, retries any other failure, and does not count
// disruptions (eviction, preemption, drain) against backoffLimit.
func podFailurePolicy() *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{
			Action: batchv1.PodFailurePolicyActionIgnore,
			OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
				{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue},
			},
		},
		{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: ptr.To(importerContainer),
				Operator:      batchv1.PodFailurePolicyOnExitCodesOpIn,
				Values:        []int32{importresult.ExitPermanent},
			},
		},
	}}
}

// importerArgs is the importer's command line for a task. Secrets travel as
// mounted files, never as arguments or environment values.
func importerArgs(t *tasksv1.ImageImportTask) []string {
	in := t.Spec.Input
	src := t.Spec.Source
	args := []string{
		"--source=" + in.ImportFrom,
		"--source-format=" + string(in.ImportFromFormat),
		"--target-format=" + string(in.ImageProperties.DiskFormat),
		"--container-format=" + string(in.ImageProperties.ContainerFormat), // ova: the source is a tar holding the disk
		"--image-id=" + taskImageID(t),
		"--result-file=" + corev1.TerminationMessagePathDefault,
		"--connect-timeout=" + strconv.Itoa(int(ptr.Deref(src.ConnectTimeoutSeconds, 30))) + "s",
		"--idle-timeout=" + strconv.Itoa(int(ptr.Deref(src.IdleTimeoutSeconds, 60))) + "s",
		"--progress-task=" + t.Namespace + "/" + t.Name,
	}
	for _, c := range src.Checksums {
		args = append(args, "--expected-"+string(c.Algorithm)+"="+c.Value)
	}
	if src.CredentialsSecretRef != nil {
		args = append(args, "--credentials-dir="+credentialsMountPath)
	}
	if src.CABundleSecretRef != nil {
		args = append(args, "--ca-bundle="+caBundleMountPath+"/"+caBundleKey)
	}
	return args
}

func importerVolumes(t *tasksv1.ImageImportTask, cfg ImporterConfig) ([]corev1.Volume, []corev1.VolumeMount, []corev1.VolumeDevice) {
	dest, mounts, devices := destinationVolume(t, cfg)
	volumes := []corev1.Volume{dest,
		{Name: "scratch", VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(cfg.ScratchSize)},
		}},
	}
	mounts = append(mounts, corev1.VolumeMount{Name: "scratch", MountPath: scratchMountPath})
	if ref := t.Spec.Source.CredentialsSecretRef; ref != nil {
		volumes = append(volumes, secretVolume("credentials", ref.Name, nil))
		mounts = append(mounts, corev1.VolumeMount{Name: "credentials", MountPath: credentialsMountPath, ReadOnly: true})
	}
	if ref := t.Spec.Source.CABundleSecretRef; ref != nil {
		only := []corev1.KeyToPath{{Key: caBundleKey, Path: caBundleKey}}
		volumes = append(volumes, secretVolume("ca-bundle", ref.Name, only))
		mounts = append(mounts, corev1.VolumeMount{Name: "ca-bundle", MountPath: caBundleMountPath, ReadOnly: true})
	}
	return volumes, mounts, devices
}

func secretVolume(name, secret string, items []corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		Secret: &corev1.SecretVolumeSource{SecretName: secret, Items: items, DefaultMode: ptr.To[int32](0o440)},
	}}
}

// truncateLabel keeps a name within a label value's 63 characters.
func truncateLabel(s string) string {
	if len(s) <= 63 {
		return s
	}
	return strings.TrimRight(s[:63], "-._")
}
