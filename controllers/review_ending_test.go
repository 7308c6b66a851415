package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/progress"
)

// importerClient is a client with the token of the task's importer service
// account: what an importer pod (or anyone who can run a pod with, or
// impersonate, that service account in the namespace) holds.
func importerClient(t *testing.T, task *tasksv1.ImageImportTask) client.Client {
	t.Helper()
	var tr *authnv1.TokenRequest
	NewWithT(t).Eventually(func() (err error) {
		tr, err = kubernetes.NewForConfigOrDie(testCfg).CoreV1().ServiceAccounts(task.Namespace).
			CreateToken(context.Background(), jobName(task), &authnv1.TokenRequest{}, metav1.CreateOptions{})
		return err
	}, wait).Should(Succeed())
	cfg := &rest.Config{Host: testCfg.Host, TLSClientConfig: rest.TLSClientConfig{CAData: testCfg.CAData}, BearerToken: tr.Status.Token}
	c, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// REVIEW BUG (pre-existing, not from the reviewed commits; relevant to who
// can write status.importerResult): the importer's Role grants patch on the
// whole imageimporttasks/status, not only progress and importerResult. A
// holder of the token sets status.status=success and status.image itself,
// location included, before any importer pod ran; the Image reconciler
// settles the Image active from it: the location is then another image's
// file of the namespace (whose data this image's downloads serve and its
// cleanup removes). The reconciler's own checks on the pushed result (image
// id, location computed by the reconciler) are bypassed entirely.
func TestReviewImporterTokenForgesTheWholeStatus(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	task := createTask(t, sampleTask(newNamespace(t), "forged"))
	waitForJob(t, task) // no pod ever runs
	imp := importerClient(t, task)
	victim := "pvc://" + task.Namespace + "/" + testImporterConfig().StoreClaimName + "/another-images-id"
	forged := `{"status":{"status":"success","result":{"imageID":"` + imageID(task) + `"},` +
		`"image":{"size":1,"checksum":"` + strings.Repeat("0", 32) + `","location":"` + victim + `"}}}`
	g.Eventually(func() error {
		return imp.Status().Patch(ctx, task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(forged)))
	}, wait).Should(Succeed()) // RBAC caches settle

	img := &tasksv1.Image{}
	g.Consistently(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: imageID(task)}, img)).To(Succeed())
		g.Expect(img.Status.Status).NotTo(Equal(tasksv1.ImageActive),
			"the importer's token made the Image active without an import, location %q", img.Status.Location)
	}, "3s").Should(Succeed())
}

// REVIEW BUG (7fd5c80/771b4be): once the task ended from the pushed result
// while its Job still runs, nothing keeps the Job's later pods (a retry
// after the pod that pushed was evicted, preempted or killed before it
// exited: DisruptionTarget is ignored by the pod failure policy) from
// writing into the finished task: its progress goes back from Done 100%
// to the new import's, and importerResult is set again and never cleared
// (finish() runs once). Before, a task ended only with its Job, when no
// importer pod could run any more.
func TestReviewFinishedTaskIsRewrittenByALaterImporterPush(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	task := createTask(t, sampleTask(newNamespace(t), "rewritten"))
	job := waitForJob(t, task)
	startJob(t, job)
	waitForStatus(t, task, tasksv1.TaskProcessing)
	status := importerStatus(t, task, job)
	res := importresult.Result{
		ImageID: imageID(task), Size: 4096, VirtualSize: 8192, SourceFormat: "qcow2", DiskFormat: "raw",
		Checksum: strings.Repeat("1", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("2", 128),
	}
	g.Eventually(func() error {
		return status.ReportResult(ctx, []byte(resultJSON(t, res)), progress.Progress{Phase: "Done", BytesDone: 4096, BytesTotal: 4096})
	}, wait).Should(Succeed())
	done := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(jobsOf(t, task)[0].Status.Conditions).To(BeEmpty(), "the Job still runs")

	// The Job's next pod (the first was evicted right after its push)
	// imports again into the same destination and reports as it goes.
	g.Expect(status.Report(ctx, progress.Progress{Phase: "Fetching", BytesDone: 1, BytesTotal: 4096})).To(Succeed())
	g.Expect(status.ReportResult(ctx, []byte(resultJSON(t, res)), progress.Progress{Phase: "Fetching", BytesDone: 1, BytesTotal: 4096})).To(Succeed())

	g.Consistently(func(g Gomega) {
		now := &tasksv1.ImageImportTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), now)).To(Succeed())
		g.Expect(now.Status.Progress).To(Equal(done.Status.Progress), "a finished task's progress went back")
		g.Expect(now.Status.ImporterResult).To(BeEmpty(), "a finished task holds an importer result again")
	}, 3*time.Second).Should(Succeed())
}
