package controllers

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

func jobWith(ready int32, failed int32, conds ...batchv1.JobConditionType) *batchv1.Job {
	job := &batchv1.Job{}
	job.Name = "job"
	job.Status.Ready, job.Status.Failed = ptr.To(ready), failed
	for _, c := range conds {
		job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: c, Status: corev1.ConditionTrue})
	}
	return job
}

func TestObserve(t *testing.T) {
	ok := &importresult.Result{ImageID: "img"}
	bad := &importresult.Result{Error: "The source answered HTTP 404 Not Found.", Reason: importresult.ReasonSourceError}
	failedFor := func(reason string, failed int32) *batchv1.Job {
		job := jobWith(0, failed, batchv1.JobFailureTarget, batchv1.JobFailed)
		job.Status.Conditions[1].Reason = reason
		return job
	}
	cases := []struct {
		name string
		obs  observation
		want outcome
	}{
		{"no Job yet", observation{}, outcome{tasksv1.TaskPending, tasksv1.ReasonJobCreated, ""}},
		{"Job waiting for a pod", observation{job: jobWith(0, 0)}, outcome{tasksv1.TaskPending, tasksv1.ReasonJobCreated, ""}},
		{"pod running", observation{job: jobWith(1, 0)}, outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}},
		{"between retries", observation{job: jobWith(0, 1)}, outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}},
		{"success criteria met is not the end", observation{job: jobWith(1, 0, batchv1.JobSuccessCriteriaMet)},
			outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}},
		{"failure target is not the end", observation{job: jobWith(1, 0, batchv1.JobFailureTarget)},
			outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}},
		{"complete with a result", observation{job: jobWith(0, 0, batchv1.JobComplete), result: ok},
			outcome{tasksv1.TaskSuccess, tasksv1.ReasonSucceeded, ""}},
		{"complete without a result", observation{job: jobWith(0, 0, batchv1.JobComplete)},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, "The importer exited without reporting an imported image."}},
		{"permanent failure", observation{job: failedFor(batchv1.JobReasonPodFailurePolicy, 1), result: bad},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, bad.Error}},
		{"retries used up", observation{job: failedFor(batchv1.JobReasonBackoffLimitExceeded, 4), result: bad},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonBackoffLimitExceeded, bad.Error + " Gave up after 4 attempts."}},
		{"failed pod without a result", observation{job: failedFor(batchv1.JobReasonPodFailurePolicy, 1), podMessage: "exit code 2 (Error)"},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, "The importer failed: exit code 2 (Error)"}},
		{"no pod left", observation{job: failedFor(batchv1.JobReasonPodFailurePolicy, 1)},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, "The importer failed."}},
		{"deadline before a pod ran", observation{job: failedFor(batchv1.JobReasonDeadlineExceeded, 0)},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonDeadlineExceeded, "The importer did not start within 3600 seconds."}},
		{"deadline", observation{job: failedFor(batchv1.JobReasonDeadlineExceeded, 1)},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonDeadlineExceeded, "The import did not finish within 3600 seconds."}},
		{"deadline of a pod that could not start", observation{job: failedFor(batchv1.JobReasonDeadlineExceeded, 0),
			waiting: &problem{tasksv1.ReasonUnschedulable, "The importer pod cannot be scheduled: no."}},
			outcome{tasksv1.TaskFailure, tasksv1.ReasonUnschedulable, "The import did not finish within 3600 seconds: The importer pod cannot be scheduled: no."}},
		{"waiting for the claim", observation{waiting: &problem{tasksv1.ReasonStoreClaimMissing, "no claim"}},
			outcome{tasksv1.TaskPending, tasksv1.ReasonStoreClaimMissing, "no claim"}},
		{"pod cannot start", observation{job: jobWith(0, 0), waiting: &problem{tasksv1.ReasonImagePullFailed, "no image"}},
			outcome{tasksv1.TaskPending, tasksv1.ReasonImagePullFailed, "no image"}},
		{"retry cannot start", observation{job: jobWith(0, 1), waiting: &problem{tasksv1.ReasonQuotaExceeded, "no room"}},
			outcome{tasksv1.TaskProcessing, tasksv1.ReasonQuotaExceeded, "no room"}},
		{"decided failure", failed(tasksv1.ReasonJobDeleted, "gone"), outcome{tasksv1.TaskFailure, tasksv1.ReasonJobDeleted, "gone"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := outcomeOf(sampleTask("ns", "t"), tc.obs); got != tc.want {
				t.Errorf("outcomeOf() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPathFollowsGlanceTransitions(t *testing.T) {
	P, R, S, F := tasksv1.TaskPending, tasksv1.TaskProcessing, tasksv1.TaskSuccess, tasksv1.TaskFailure
	cases := []struct {
		from, to tasksv1.TaskStatus
		want     []tasksv1.TaskStatus
	}{
		{"", P, []tasksv1.TaskStatus{P}},
		{"", S, []tasksv1.TaskStatus{P, R, S}},
		{"", F, []tasksv1.TaskStatus{P, F}},
		{P, R, []tasksv1.TaskStatus{R}},
		{P, S, []tasksv1.TaskStatus{R, S}},
		{P, F, []tasksv1.TaskStatus{F}},
		{R, S, []tasksv1.TaskStatus{S}},
		{R, F, []tasksv1.TaskStatus{F}},
		{R, R, nil},
		{R, P, nil},
	}
	for _, tc := range cases {
		got := path(tc.from, tc.to)
		if len(got) != len(tc.want) || strings.Join(statuses(got), ",") != strings.Join(statuses(tc.want), ",") {
			t.Errorf("path(%q, %q) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

func statuses(s []tasksv1.TaskStatus) []string {
	var out []string
	for _, x := range s {
		out = append(out, string(x))
	}
	return out
}

func TestApplyOutcome(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	task := sampleTask("ns", "t")

	job := jobWith(0, 0, batchv1.JobComplete)
	job.Status.CompletionTime = &metav1.Time{Time: now.Add(-time.Minute)}
	obs := observation{job: job, result: &importresult.Result{ImageID: "img", Size: 10, DiskFormat: "raw"}, storeLocation: "pvc://ns/store/img"}
	taken := applyOutcome(task, obs, outcomeOf(task, obs), now, time.Hour)

	g.Expect(taken).To(HaveLen(3), "pending, processing, success")
	g.Expect(taken[1].reason).To(Equal(tasksv1.ReasonImporting))
	g.Expect(task.Status.Status).To(Equal(tasksv1.TaskSuccess))
	g.Expect(task.Status.CompletionTime.Time).To(Equal(now.Add(-time.Minute)), "the Job's completion, not our observation")
	g.Expect(task.Status.ExpiresAt.Time).To(Equal(now.Add(59 * time.Minute)))
	g.Expect(task.Status.Image.Location).To(Equal("pvc://ns/store/img"))
	g.Expect(task.Status.Progress).To(Equal(&tasksv1.Progress{Phase: "Done", Percent: ptr.To[int32](100), BytesDone: 10, BytesTotal: 10}))

	// A finished task never changes again, whatever is observed.
	before := task.Status.DeepCopy()
	g.Expect(applyOutcome(task, failed(tasksv1.ReasonJobDeleted, "gone"), outcome{tasksv1.TaskFailure, tasksv1.ReasonJobDeleted, "gone"}, now.Add(time.Hour), time.Hour)).To(BeEmpty())
	g.Expect(&task.Status).To(Equal(before))
}

// What a compressed OVA held reaches the task's status; the stored image
// is the disk, so its container format is bare, as in Glance.
func TestUnpackedSourceInTheStatus(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	task := sampleTask("ns", "ova")
	task.Spec.Input.ImageProperties.ContainerFormat = "ova"
	job := jobWith(0, 0, batchv1.JobComplete)
	obs := observation{job: job, result: &importresult.Result{ImageID: "img", Size: 10, DiskFormat: "raw", Unpacked: &importresult.Unpacked{
		Compression: "xz", CompressedSize: 4, UncompressedSize: 20, DiskSize: 12, OVAEntry: "disk1.vmdk", OVFName: "appliance", OVFProduct: "Appliance OS"}}}
	applyOutcome(task, obs, outcomeOf(task, obs), now, time.Hour)
	g.Expect(task.Status.Image.ContainerFormat).To(Equal("bare"))
	g.Expect(task.Status.Image.Unpacked).To(Equal(&tasksv1.UnpackedSource{
		Compression: "xz", CompressedSize: 4, UncompressedSize: 20, OVAEntry: "disk1.vmdk", OVFName: "appliance", OVFProduct: "Appliance OS"}))
}

// A Job seen failed before it counted its pod still ran one attempt: the
// task says so, and a finished task never changes again to correct it.
func TestAttemptsCountAPodNotYetCounted(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for name, edit := range map[string]func(*batchv1.Job, *observation){
		"uncounted": func(j *batchv1.Job, _ *observation) {
			j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{Failed: []types.UID{"pod"}}
		},
		"a result": func(_ *batchv1.Job, o *observation) {
			o.result = &importresult.Result{Reason: importresult.ReasonUnsafeImage, Error: "Refused an unsafe vmdk image."}
		},
	} {
		task := sampleTask("ns", name)
		job := jobWith(0, 0, batchv1.JobFailed)
		obs := observation{job: job}
		edit(job, &obs)
		applyOutcome(task, obs, outcomeOf(task, obs), now, time.Hour)
		g.Expect(task.Status.Status).To(Equal(tasksv1.TaskFailure), name)
		g.Expect(task.Status.Attempts).To(Equal(int32(1)), name)
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	s := strings.Repeat("é", 600) // 1200 bytes
	got := truncate(s, 1024)
	if len(got) > 1024 || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("truncate gave %d bytes, valid=%v", len(got), utf8.ValidString(got))
	}
}

// TestDeadlineRemembersWhyTheImporterDidNotStart: the Job controller
// deletes the pods of a Job past its deadline; the task's status still
// knows why they did not start, and the task fails for that reason.
func TestDeadlineRemembersWhyTheImporterDidNotStart(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	task := sampleTask("ns", "t")
	pulling := observation{job: jobWith(0, 0), waiting: &problem{tasksv1.ReasonImagePullFailed, "The importer image cannot be pulled: ErrImagePull: not found"}}
	applyOutcome(task, pulling, outcomeOf(task, pulling), now, time.Hour)
	g.Expect(task.Status.Status).To(Equal(tasksv1.TaskPending))
	g.Expect(task.Status.Message).To(Equal("The importer image cannot be pulled: ErrImagePull: not found"))

	job := jobWith(0, 0, batchv1.JobFailureTarget, batchv1.JobFailed)
	job.Status.Conditions[1].Reason = batchv1.JobReasonDeadlineExceeded
	gone := observation{job: job} // no pod left to tell
	out := outcomeOf(task, gone)
	g.Expect(out).To(Equal(outcome{tasksv1.TaskFailure, tasksv1.ReasonImagePullFailed,
		"The import did not finish within 3600 seconds: The importer image cannot be pulled: ErrImagePull: not found"}))
}
