package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// volumeTask is a task that imports into a volume of its own.
func volumeTask(ns, name string, v *tasksv1.VolumeDestination) *tasksv1.ImageImportTask {
	task := sampleTask(ns, name)
	task.Spec.Destination = &tasksv1.Destination{Type: tasksv1.DestinationVolume, Volume: v}
	return task
}

// waitForClaim waits for a claim and returns it.
func waitForClaim(t *testing.T, ns, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{}
	NewWithT(t).Eventually(func() error {
		return k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, pvc)
	}, wait).Should(Succeed(), "claim %s was never created", name)
	return pvc
}

// TestVolumeClaimFromSpec: the claim the operator creates for each volume
// spec (class, modes, size, labels, annotations, owner) and how the
// importer pod writes to it.
func TestVolumeClaimFromSpec(t *testing.T) {
	fsNeedFor20Gi := resource.MustParse("21672Mi") // ceil(20 GiB / 0.945), to the MiB
	cases := []struct {
		name     string
		volume   *tasksv1.VolumeDestination
		minDisk  *int32
		format   tasksv1.DiskFormat
		size     resource.Quantity
		mode     corev1.PersistentVolumeMode
		access   []corev1.PersistentVolumeAccessMode
		location string
		args     []string
	}{{
		name:   "defaults",
		volume: &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast")},
		size:   DefaultVolumeSize, mode: corev1.PersistentVolumeFilesystem,
		access:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		location: "/disk.img",
		args:     []string{"--dest=" + volumeMountPath, "--dest-file=disk.img", "--dest-capacity=10737418240"},
	}, {
		name: "block, sized, shared",
		volume: &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast"), VolumeMode: ptr.To(corev1.PersistentVolumeBlock),
			Size: ptr.To(resource.MustParse("3Gi")), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}},
		size: resource.MustParse("3Gi"), mode: corev1.PersistentVolumeBlock,
		access:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
		location: "",
		args:     []string{"--dest=" + scratchMountPath, "--dest-device=" + volumeDevicePath, "--dest-capacity=3221225472"},
	}, {
		name:    "minDisk over the default size, qcow2",
		volume:  &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast")},
		minDisk: ptr.To[int32](20), format: "qcow2",
		size: fsNeedFor20Gi, mode: corev1.PersistentVolumeFilesystem,
		access:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		location: "/disk.img",
		args:     []string{"--dest=" + volumeMountPath, "--dest-file=disk.img", "--dest-capacity=22724739072"},
	}}
	ns := newNamespaceWithoutClaim(t) // a volume needs no store claim
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := volumeTask(ns, fmt.Sprintf("vol-%d", i), tc.volume)
			task.Spec.Input.ImageProperties.MinDisk = tc.minDisk
			if tc.format != "" {
				task.Spec.Input.ImageProperties.DiskFormat = tc.format
			}
			createTask(t, task)
			job := waitForJob(t, task)
			id := taskImageID(task)
			pvc := waitForClaim(t, ns, id)
			img := &tasksv1.Image{}
			g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: id}, img)).To(Succeed())

			g.Expect(pvc.Spec.StorageClassName).To(Equal(ptr.To("fast")))
			g.Expect(pvc.Spec.VolumeMode).To(Equal(ptr.To(tc.mode)))
			g.Expect(pvc.Spec.AccessModes).To(Equal(tc.access))
			g.Expect(pvc.Spec.Resources.Requests.Storage().Cmp(tc.size)).To(BeZero(), "size %s, want %s", pvc.Spec.Resources.Requests.Storage(), &tc.size)
			g.Expect(pvc.Labels).To(HaveKeyWithValue(tasksv1.LabelImageID, id))
			g.Expect(pvc.Annotations).To(And(HaveKeyWithValue(tasksv1.AnnotationSource, "https://images.test/cirros.qcow2"),
				HaveKeyWithValue(tasksv1.AnnotationSourceFormat, "qcow2"),
				HaveKeyWithValue(tasksv1.AnnotationDiskFormat, string(task.Spec.Input.ImageProperties.DiskFormat))))
			owner := metav1.GetControllerOf(pvc)
			g.Expect(owner).NotTo(BeNil(), "the Image owns its volume")
			g.Expect(owner.UID).To(Equal(img.UID))
			g.Expect(owner.Kind).To(Equal("Image"))

			pod := job.Spec.Template.Spec
			g.Expect(pod.Volumes).To(ContainElement(HaveField("VolumeSource.PersistentVolumeClaim.ClaimName", id)))
			g.Expect(pod.Volumes).NotTo(ContainElement(HaveField("Name", "store")), "a volume import does not mount the store")
			c := pod.Containers[0]
			if tc.mode == corev1.PersistentVolumeBlock {
				g.Expect(c.VolumeDevices).To(ConsistOf(corev1.VolumeDevice{Name: "image", DevicePath: volumeDevicePath}))
			} else {
				g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "image", MountPath: volumeMountPath}))
			}
			g.Expect(c.Args).To(ContainElements(tc.args))
			g.Expect(c.Args).NotTo(ContainElement("--dest=" + storeMountPath))
			g.Expect(imageLocation(task, testImporterConfig())).To(Equal("pvc://" + ns + "/" + id + tc.location))
		})
	}
}

// TestVolumeImageLifecycle: a successful import into a volume records its
// checksums (sha256 too) on the claim, the task and the Image, and its
// location on the Image, and deletes its finished importer pod (which
// would keep the claim); deleting the Image runs no store cleanup Job and leaves the claim to the garbage collector
// (envtest has none: its owner reference is what it would follow).
func TestVolumeImageLifecycle(t *testing.T) {
	const sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespaceWithoutClaim(t)
	task := createTask(t, volumeTask(ns, "to-volume", &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast")}))
	job := waitForJob(t, task)
	id := taskImageID(task)
	startJob(t, job)
	// The importer's pod ends. The kubelet removes a deleted pod once its volumes are
	// unmounted: played here by a finalizer.
	pod := createPod(t, job, job.Name+"-a")
	pod.Finalizers = append(pod.Finalizers, "test.imageimport.io/kubelet")
	g.Expect(k8sClient.Update(ctx, pod)).To(Succeed())
	result := resultJSON(t, importresult.Result{ImageID: id, Size: 1 << 20, VirtualSize: 1 << 30,
		Checksum: "0123456789abcdef0123456789abcdef", OSHashAlgo: "sha512", OSHashValue: "ab12", SHA256: sha256Hex, DiskFormat: "raw"})
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: importerContainer, Image: job.Spec.Template.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: result}},
	}}})
	// The finished importer pod is deleted, and the task succeeds only once it is gone: the
	// kubelet applies a consumer's fsGroup to a local volume only when no other pod has it
	// mounted. Also, a pod in any phase keeps its claims from being deleted
	// (kubernetes.io/pvc-protection), and the volume must go with its Image.
	g.Eventually(func() bool {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		return pod.DeletionTimestamp != nil
	}, wait).Should(BeTrue(), "the finished importer pod is not deleted")
	g.Consistently(func() tasksv1.TaskStatus {
		now := &tasksv1.ImageImportTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), now)).To(Succeed())
		return now.Status.Status
	}, "2s").Should(Equal(tasksv1.TaskProcessing), "the task succeeded while its importer pod still holds the volume")
	pod.Finalizers = nil
	g.Expect(k8sClient.Update(ctx, pod)).To(Succeed())
	got := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(got.Status.Image.Location).To(Equal("pvc://" + ns + "/" + id + "/disk.img"))
	g.Expect(got.Status.Image.SHA256).To(Equal(sha256Hex))
	g.Expect(got.Status.ImporterResult).To(BeEmpty())
	completeJob(t, job)
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed(), "the Job stays")
	img := waitForImage(t, ns, id, tasksv1.ImageActive)
	g.Expect(img.Status.Location).To(Equal("pvc://" + ns + "/" + id + "/disk.img"))
	g.Expect(img.Status.SHA256).To(Equal(sha256Hex))
	g.Eventually(func() map[string]string { return waitForClaim(t, ns, id).Annotations }, wait).Should(And(
		HaveKeyWithValue(tasksv1.AnnotationChecksum, "0123456789abcdef0123456789abcdef"),
		HaveKeyWithValue(tasksv1.AnnotationOSHash, "sha512:ab12"),
		HaveKeyWithValue(tasksv1.AnnotationSHA256, sha256Hex),
		HaveKeyWithValue(tasksv1.AnnotationVirtualSize, "1073741824"),
		HaveKeyWithValue(tasksv1.AnnotationSize, "1048576")))

	deletions := gathered("imageimport_image_deletions_total", map[string]string{"outcome": "volume"})
	g.Expect(k8sClient.Delete(ctx, img)).To(Succeed())
	g.Eventually(imageGone(ns, id), wait).Should(BeTrue(), "the image goes at once: its data is its volume")
	err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: cleanupJobName(img)}, &batchv1.Job{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no store cleanup Job for a volume image")
	g.Expect(gathered("imageimport_image_deletions_total", map[string]string{"outcome": "volume"})).To(Equal(deletions + 1))
	pvc := waitForClaim(t, ns, id)
	owner := metav1.GetControllerOf(pvc)
	g.Expect(owner).NotTo(BeNil())
	g.Expect(owner.UID).To(Equal(img.UID), "the garbage collector deletes the claim of the deleted image")
	g.Expect(ptr.Deref(owner.BlockOwnerDeletion, false)).To(BeTrue())
}

// TestAVolumeImportRecordsItsResultBeforeItsPodsGo: the result of a
// volume import is in the task's status before any of its importer pods,
// the only others to hold it, is deleted; deleted in the same reconcile, a
// status write that then conflicted lost the result with them. A result in
// the status that is not this import's does not count.
func TestAVolumeImportRecordsItsResultBeforeItsPodsGo(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	direct := directReconciler(t) // no manager reconciles tasks labelled no-manager: only this
	task := volumeTask(newNamespaceWithoutClaim(t), "recorded-first", &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast")})
	task.Labels = map[string]string{labelManager: "no-manager"}
	createTask(t, task)
	reconcileTask := func() {
		_, err := direct.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(task)})
		g.Expect(err).NotTo(HaveOccurred())
	}
	job := &batchv1.Job{}
	g.Eventually(func() error {
		reconcileTask()
		return k8sClient.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}, job)
	}, wait).Should(Succeed())
	// Another writer's result in the status (the importer-status policy
	// lets the namespace's service accounts write it): not this import's.
	setTaskStatus(t, task, func(s *tasksv1.ImageImportTaskStatus) {
		s.ImporterResult = resultJSON(t, importresult.Result{ImageID: "another-image", Size: 1})
	})
	pod := createPod(t, job, job.Name+"-a")
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: importerContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			Reason: "Completed", Message: resultJSON(t, importresult.Result{ImageID: taskImageID(task), Size: 1})}},
	}}})
	g.Eventually(func() corev1.PodPhase {
		var seen corev1.Pod
		g.Expect(direct.importerCache.Get(ctx, client.ObjectKeyFromObject(pod), &seen)).To(Succeed())
		return seen.Status.Phase
	}, wait).Should(Equal(corev1.PodSucceeded))

	reconcileTask()
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task)).To(Succeed())
	g.Expect(task.Status.ImporterResult).To(ContainSubstring(taskImageID(task)), "the import's own result is recorded")
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed(), "the pod was deleted by the reconcile that wrote its result")
	g.Expect(pod.DeletionTimestamp).To(BeNil(), "the pod is being deleted by the reconcile that wrote its result")
	reconcileTask()
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod))
	}, wait).Should(BeTrue(), "the pod goes once its result is in the status")
}

// TestVolumeRefusedAtOnce: what no volume could fix fails the task at once,
// with no claim and no Job.
func TestVolumeRefusedAtOnce(t *testing.T) {
	cases := []struct {
		name    string
		task    func(ns string) *tasksv1.ImageImportTask
		reason  string
		message string
	}{{
		name:    "no storage class anywhere",
		task:    func(ns string) *tasksv1.ImageImportTask { return volumeTask(ns, "no-class", nil) },
		reason:  tasksv1.ReasonStorageClassMissing,
		message: "The image's volume names no storage class, the manager has no --volume-storage-class and the cluster has no default StorageClass",
	}, {
		name: "smaller than minDisk",
		task: func(ns string) *tasksv1.ImageImportTask {
			task := volumeTask(ns, "small", &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast"), Size: ptr.To(resource.MustParse("1Gi"))})
			task.Spec.Input.ImageProperties.MinDisk = ptr.To[int32](2)
			return task
		},
		reason:  tasksv1.ReasonInvalidInput,
		message: "spec.destination.volume.size (1Gi) is smaller than input.imageProperties.minDisk (2 GiB) needs in a Filesystem volume: at least 2168Mi.",
	}, {
		name: "a request over the manager's limit",
		task: func(ns string) *tasksv1.ImageImportTask {
			task := sampleTask(ns, "greedy")
			task.Spec.ImporterPod = &tasksv1.ImporterPod{Resources: &tasksv1.ImporterResources{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")}}}
			return task
		},
		reason:  tasksv1.ReasonInvalidInput,
		message: "The importer's memory request (8Gi) exceeds its limit (1Gi)",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			labels := startManagerFor(t, func(c *ImporterConfig) {
				c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
			})
			task := tc.task(ns)
			task.Labels = labels
			createTask(t, task)
			got := waitForStatus(t, task, tasksv1.TaskFailure)
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, tasksv1.ConditionReady).Reason).To(Equal(tc.reason))
			g.Expect(got.Status.Message).To(ContainSubstring(tc.message))
			g.Expect(jobsOf(t, task)).To(BeEmpty())
			err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: taskImageID(task)}, &corev1.PersistentVolumeClaim{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no claim for an import that cannot run")
		})
	}
}

// TestStoreClaimCreated: a namespace without the store claim gets one from
// the operator when the manager names a class (--store-storage-class), or
// when the cluster has a default class, and the import starts.
func TestStoreClaimCreated(t *testing.T) {
	t.Run("manager's class", func(t *testing.T) {
		g := NewWithT(t)
		ns := newNamespaceWithoutClaim(t)
		labels := startManagerFor(t, func(c *ImporterConfig) {
			c.Destination.StoreStorageClass = "shared-fs"
			c.Destination.StoreSize = resource.MustParse("20Gi")
		})
		task := sampleTask(ns, "creates-store")
		task.Labels = labels
		createTask(t, task)
		waitForJob(t, task)
		pvc := waitForClaim(t, ns, "image-store")
		g.Expect(pvc.Spec.StorageClassName).To(Equal(ptr.To("shared-fs")))
		g.Expect(pvc.Spec.AccessModes).To(Equal([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}))
		g.Expect(pvc.Spec.Resources.Requests.Storage().String()).To(Equal("20Gi"))
		g.Expect(metav1.GetControllerOf(pvc)).To(BeNil(), "the store is the namespace's, not one task's")
		g.Eventually(func() []taskEvent { return eventsOf(t, task) }, wait).Should(ContainElement(And(
			HaveField("Reason", "StoreClaimCreated"), HaveField("Note", ContainSubstring("class shared-fs")))))
	})
	t.Run("cluster's default class", func(t *testing.T) {
		g := NewWithT(t)
		ctx := context.Background()
		sc := &storagev1.StorageClass{
			ObjectMeta:  metav1.ObjectMeta{GenerateName: "default-", Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
			Provisioner: "test.imageimport.io/none",
		}
		g.Expect(k8sClient.Create(ctx, sc)).To(Succeed())
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, sc) })
		ns := newNamespaceWithoutClaim(t)
		task := createTask(t, sampleTask(ns, "default-store"))
		waitForJob(t, task)
		waitForClaim(t, ns, "image-store")
		// And a volume without a class gets the default one, by name.
		vt := createTask(t, volumeTask(ns, "default-volume", nil))
		waitForJob(t, vt)
		g.Expect(waitForClaim(t, ns, taskImageID(vt)).Spec.StorageClassName).To(Equal(ptr.To(sc.Name)))
	})
}

// TestImporterPodPlacement: the task's placement and resources, over the
// manager's, reach the importer pod's template.
func TestImporterPodPlacement(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	labels := startManagerFor(t, func(c *ImporterConfig) {
		c.Placement = PlacementDefaults{NodeSelector: map[string]string{"pool": "io", "zone": "a"}, PriorityClassName: "imports"}
		c.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		}
	})
	task := sampleTask(ns, "placed")
	task.Labels = labels
	affinity := &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
		Weight: 50, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "image-importer"}}},
	}}}}
	task.Spec.ImporterPod = &tasksv1.ImporterPod{
		NodeSelector:      map[string]string{"zone": "b"},
		Tolerations:       []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "imports", Effect: corev1.TaintEffectNoSchedule}},
		Affinity:          affinity,
		PriorityClassName: "urgent",
		Resources: &tasksv1.ImporterResources{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("4Gi")},
		},
	}
	createTask(t, task)
	pod := waitForJob(t, task).Spec.Template.Spec
	g.Expect(pod.NodeSelector).To(Equal(map[string]string{"pool": "io", "zone": "b"}))
	g.Expect(pod.Tolerations).To(Equal(task.Spec.ImporterPod.Tolerations))
	g.Expect(pod.Affinity).To(Equal(affinity))
	g.Expect(pod.PriorityClassName).To(Equal("urgent"))
	res := pod.Containers[0].Resources
	g.Expect(res.Requests.Memory().String()).To(Equal("512Mi"))
	g.Expect(res.Requests.Cpu().String()).To(Equal("250m"), "the manager's request stays where the task sets none")
	g.Expect(res.Limits.Memory().String()).To(Equal("4Gi"))

	// Without the task's, the manager's defaults.
	plain := sampleTask(ns, "plain")
	plain.Labels = labels
	createTask(t, plain)
	pod = waitForJob(t, plain).Spec.Template.Spec
	g.Expect(pod.NodeSelector).To(Equal(map[string]string{"pool": "io", "zone": "a"}))
	g.Expect(pod.PriorityClassName).To(Equal("imports"))
}

// TestDestinationRefusedAtAdmission: the API server refuses destinations
// and placements that cannot work, naming the field.
func TestDestinationRefusedAtAdmission(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(spec map[string]any)
		error string
	}{
		{"vmdk into a volume", func(s map[string]any) {
			props(s)["diskFormat"] = "vmdk"
			s["destination"] = map[string]any{"type": "Volume"}
		}, "input.imageProperties.diskFormat must be raw, or qcow2 for a Filesystem volume, when destination.type is Volume"},
		{"qcow2 into a Block volume", func(s map[string]any) {
			props(s)["diskFormat"] = "qcow2"
			s["destination"] = map[string]any{"type": "Volume", "volume": map[string]any{"volumeMode": "Block"}}
		}, "input.imageProperties.diskFormat must be raw, or qcow2 for a Filesystem volume"},
		{"volume options for the store", func(s map[string]any) {
			s["destination"] = map[string]any{"type": "Store", "volume": map[string]any{"size": "1Gi"}}
		}, "spec.destination: Invalid value: destination.volume may only be set when destination.type is Volume"},
		{"no type", func(s map[string]any) { s["destination"] = map[string]any{} },
			"spec.destination.type: Required value"},
		{"unknown type", func(s map[string]any) { s["destination"] = map[string]any{"type": "S3"} },
			`spec.destination.type: Unsupported value: "S3": supported values: "Store", "Volume"`},
		{"tiny volume", func(s map[string]any) {
			s["destination"] = map[string]any{"type": "Volume", "volume": map[string]any{"size": "1Ki"}}
		}, "spec.destination.volume.size: Invalid value: \"1Ki\": destination.volume.size must be at least 1Mi"},
		{"unknown volume mode", func(s map[string]any) {
			s["destination"] = map[string]any{"type": "Volume", "volume": map[string]any{"volumeMode": "Object"}}
		}, `spec.destination.volume.volumeMode: Unsupported value: "Object"`},
		{"unknown access mode", func(s map[string]any) {
			s["destination"] = map[string]any{"type": "Volume", "volume": map[string]any{"accessModes": []any{"ReadWriteSometimes"}}}
		}, `spec.destination.volume.accessModes[0]: Unsupported value: "ReadWriteSometimes"`},
		{"bad priority class name", func(s map[string]any) { s["importerPod"] = map[string]any{"priorityClassName": "Not_A_Name"} },
			`spec.importerPod.priorityClassName: Invalid value: "Not_A_Name"`},
		{"a GPU for the importer", func(s map[string]any) {
			s["importerPod"] = map[string]any{"resources": map[string]any{"limits": map[string]any{"nvidia.com/gpu": "1"}}}
		}, "importerPod.resources.limits may name only cpu, memory and ephemeral-storage"},
	}
	ns := newNamespace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			spec := map[string]any{}
			g.Expect(yaml.Unmarshal([]byte(validSpec), &spec)).To(Succeed())
			tc.edit(spec)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": tasksv1.GroupVersion.String(), "kind": "ImageImportTask",
				"metadata": map[string]any{"generateName": "invalid-", "namespace": ns},
				"spec":     spec,
			}}
			err := k8sClient.Create(context.Background(), obj)
			g.Expect(err).To(HaveOccurred(), "the API server accepted the manifest")
			g.Expect(err.Error()).To(ContainSubstring(tc.error))
		})
	}
}

func TestVolumeBytesFor(t *testing.T) {
	g := NewWithT(t)
	g.Expect(volumeBytesFor(1<<30, corev1.PersistentVolumeBlock)).To(Equal(int64(1 << 30)))
	// 1 GiB / 0.945 = 1083.6 MiB, rounded up to the MiB.
	g.Expect(volumeBytesFor(1<<30, corev1.PersistentVolumeFilesystem)).To(Equal(int64(1084 << 20)))
}

// A volume import waits for its deleted importer pod to go, but not forever:
// a pod whose node stopped answering stays Terminating until the node is
// removed, and the image is stored.
func TestVolumeImportDoesNotWaitForeverForItsPod(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespaceWithoutClaim(t)
	task := createTask(t, volumeTask(ns, "stuck-pod", &tasksv1.VolumeDestination{StorageClassName: ptr.To("fast")}))
	job := waitForJob(t, task)
	startJob(t, job)
	pod := createPod(t, job, job.Name+"-a")
	pod.Finalizers = append(pod.Finalizers, "test.imageimport.io/kubelet-gone")
	g.Expect(k8sClient.Update(ctx, pod)).To(Succeed())
	t.Cleanup(func() {
		if k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod) == nil {
			pod.Finalizers = nil
			k8sClient.Update(ctx, pod)
		}
	})
	setPodStatus(t, pod, corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: importerContainer, Image: job.Spec.Template.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed",
			Message: resultJSON(t, importresult.Result{ImageID: taskImageID(task), Size: 1 << 20, VirtualSize: 1 << 20, DiskFormat: "raw"})}},
	}}})
	start := time.Now()
	waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(time.Since(start)).To(BeNumerically(">=", 4*time.Second), "the task did not wait for its pod at all")
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
	g.Expect(pod.DeletionTimestamp).NotTo(BeNil(), "the pod is still there, being deleted")
}
