package importer

import (
	"errors"
	"fmt"

	"github.com/imageimport/image-import-operator/internal/importresult"
)

// Failure is a classified import failure: its message is one sentence for
// the user; Permanent says whether trying again could help.
type Failure struct {
	Reason    string // importresult.Reason*
	Permanent bool
	Message   string
	Err       error // the cause, for logs
}

func (f *Failure) Error() string { return f.Message }
func (f *Failure) Unwrap() error { return f.Err }

// ExitCode is the importer's exit code for the failure.
func (f *Failure) ExitCode() int {
	if f.Permanent {
		return importresult.ExitPermanent
	}
	return importresult.ExitTransient
}

func permanent(reason string, err error, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Permanent: true, Message: fmt.Sprintf(format, args...), Err: err}
}

func transient(reason string, err error, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Message: fmt.Sprintf(format, args...), Err: err}
}

// AsFailure classifies any error: an unclassified one is transient, since
// we cannot tell that trying again is useless.
func AsFailure(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return transient(importresult.ReasonInternal, err, "The import failed: %v.", err)
}
