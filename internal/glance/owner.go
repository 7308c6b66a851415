package glance

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// resolveOwner is the owner of an Image or an ImageImportTask. Where the
// namespace tells the project (namespace template or label), the namespace
// decides: the owner annotation is shown when it names that project (it
// keeps the project id's case) and ignored when it does not, since whoever
// may edit Images or tasks in a namespace may write it. With one namespace
// for every project, the annotation is the only record.
func (s *Server) resolveOwner(ctx context.Context, obj client.Object) (string, error) {
	annotated, namespace := obj.GetAnnotations()[annotationOwner], obj.GetNamespace()
	project, mapped, err := s.Namespaces.ProjectOf(ctx, namespace)
	switch {
	case err != nil:
		return "", fmt.Errorf("finding the project of namespace %s: %w", namespace, err)
	case !mapped || annotated == project:
		return annotated, nil
	case project == "" || annotated == "":
		return project, nil
	}
	if ns, err := s.Namespaces.For(ctx, annotated); err == nil && ns == namespace {
		return annotated, nil // the template lower-cases: the same project
	}
	return project, nil
}

// owners resolves the owners of one request's objects. A list reads
// thousands of objects from a few namespaces; with --namespace-mode=label
// each resolution reads the namespace (and may list namespaces), so each
// namespace and annotation is resolved once.
type owners struct {
	s    *Server
	seen map[[2]string]string
}

func (s *Server) owners() *owners { return &owners{s: s, seen: map[[2]string]string{}} }

func (o *owners) of(ctx context.Context, obj client.Object) (string, error) {
	key := [2]string{obj.GetNamespace(), obj.GetAnnotations()[annotationOwner]}
	if owner, ok := o.seen[key]; ok {
		return owner, nil
	}
	owner, err := o.s.resolveOwner(ctx, obj)
	if err == nil {
		o.seen[key] = owner
	}
	return owner, err
}

// taskOwner is the Glance owner of a task: resolveOwner's, for a task
// that carries an owner annotation (the shim wrote one on every task it
// made). A task made with kubectl or GitOps belongs to no Glance project.
func (o *owners) taskOwner(ctx context.Context, t *tasksv1.ImageImportTask) (string, error) {
	if t.Annotations[annotationOwner] == "" {
		return "", nil
	}
	return o.of(ctx, t)
}
