package controllers

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// The importer's service account may patch its task's status, which is
// how it pushes progress and its result. The admission policy
// (config/policy/importer_status.yaml) keeps it to those two fields: with
// its token, one cannot write the status the Image is settled from (success,
// a checksum, another image's file as the location) before any import ran.
func TestImporterTokenWritesOnlyProgressAndResult(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	task := createTask(t, sampleTask(newNamespace(t), "forged"))
	waitForJob(t, task) // no pod ever runs
	imp := importerClient(t, task)
	// RBAC caches settle: the importer's own progress goes through.
	g.Eventually(func() error {
		return imp.Status().Patch(ctx, task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"progress":{"phase":"Fetching"}}}`)))
	}, wait).Should(Succeed())

	victim := "pvc://" + task.Namespace + "/" + testImporterConfig().StoreClaimName + "/another-images-id"
	forged := `{"status":{"status":"success","result":{"imageID":"` + imageID(task) + `"},` +
		`"image":{"size":1,"checksum":"` + strings.Repeat("0", 32) + `","location":"` + victim + `"}}}`
	err := imp.Status().Patch(ctx, task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(forged)))
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
	g.Expect(err.Error()).To(ContainSubstring("an importer may change only status.progress and status.importerResult"))

	img := &tasksv1.Image{}
	g.Consistently(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: imageID(task)}, img)).To(Succeed())
		g.Expect(img.Status.Status).NotTo(Equal(tasksv1.ImageActive), "location %q", img.Status.Location)
	}, "2s").Should(Succeed())
}

// Once the importer pushed its result, the task ends while its Job may
// still run, and a later attempt of the Job (a retry after the pod that
// pushed was evicted before it exited) could import again into the same
// image and rewrite the finished status. The policy refuses its first push
// as "the import has ended", from which the importer stops; the status
// stays as the task ended.
func TestAnEndedImportRefusesLaterPushes(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	task := createTask(t, sampleTask(newNamespace(t), "ended"))
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
	// Pushed, not yet read by the reconciler, or read: either way ended.
	g.Expect(status.Report(ctx, progress.Progress{Phase: "Fetching", BytesDone: 1})).To(MatchError(progress.ErrImportEnded))
	done := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(jobsOf(t, task)[0].Status.Conditions).To(BeEmpty(), "the Job still runs")

	g.Expect(status.Report(ctx, progress.Progress{Phase: "Fetching", BytesDone: 1, BytesTotal: 4096})).To(MatchError(progress.ErrImportEnded))
	g.Expect(status.ReportResult(ctx, []byte(resultJSON(t, res)), progress.Progress{Phase: "Fetching"})).To(MatchError(progress.ErrImportEnded))
	g.Consistently(func(g Gomega) {
		now := &tasksv1.ImageImportTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), now)).To(Succeed())
		g.Expect(now.Status.Progress).To(Equal(done.Status.Progress))
		g.Expect(now.Status.ImporterResult).To(BeEmpty())
	}, "2s").Should(Succeed())
}

// The policy names every field of the status an importer may not change:
// a field added to the status must be added there too.
func TestImporterStatusPolicyKeepsEveryOtherField(t *testing.T) {
	policy, err := os.ReadFile(filepath.Join("..", "config", "policy", "importer_status.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fields := reflect.TypeFor[tasksv1.ImageImportTaskStatus]()
	for i := range fields.NumField() {
		name, _, _ := strings.Cut(fields.Field(i).Tag.Get("json"), ",")
		if name == "progress" || name == "importerResult" {
			continue
		}
		if kept := "oldObject.?status.?" + name + " == object.?status.?" + name; !strings.Contains(string(policy), kept) {
			t.Errorf("config/policy/importer_status.yaml lets an importer change status.%s: it lacks %q", name, kept)
		}
	}
	if !strings.Contains(string(policy), progress.EndedMessage) {
		t.Errorf("the policy's refusal of an ended import does not say %q, by which the importer knows it", progress.EndedMessage)
	}
}
