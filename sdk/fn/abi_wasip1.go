//go:build wasip1

package fn

import "unsafe"

// abiVersion is the ABI this SDK speaks; the host refuses modules with
// another.
const abiVersion = 1

//go:wasmimport lambdadb request
func hostRequest(ptr unsafe.Pointer, n uint32)

//go:wasmimport lambdadb respond
func hostRespond(ptr unsafe.Pointer, n uint32)

//go:wasmimport lambdadb call
func hostCallRaw(op uint32, ptr unsafe.Pointer, n uint32, out unsafe.Pointer, outCap uint32) uint32

//go:wasmimport lambdadb result
func hostResult(ptr unsafe.Pointer, n uint32)

//go:wasmimport lambdadb log
func hostLogRaw(ptr unsafe.Pointer, n uint32)

//go:wasmimport lambdadb sleep
func hostSleep(ns uint64)

//go:wasmexport ldb_abi_version
func exportABIVersion() uint32 { return abiVersion }

//go:wasmexport ldb_entrypoints
func exportEntrypoints() uint32 { return registered }

//go:wasmexport ldb_invoke
func exportInvoke(kind, n uint32) uint32 {
	req := make([]byte, n)
	if n > 0 {
		hostRequest(unsafe.Pointer(&req[0]), n)
	}
	status, resp := invoke(kind, req)
	hostRespond(ptrOf(resp), uint32(len(resp)))
	return status
}

// scratch receives host call results that fit, saving a second crossing.
var scratch = make([]byte, 64<<10)

func hostCall(op uint32, req []byte) []byte {
	n := hostCallRaw(op, ptrOf(req), uint32(len(req)), unsafe.Pointer(&scratch[0]), uint32(len(scratch)))
	out := make([]byte, n)
	if int(n) <= len(scratch) {
		copy(out, scratch[:n])
	} else {
		hostResult(unsafe.Pointer(&out[0]), n)
	}
	return out
}

func hostLog(s string) {
	b := []byte(s)
	hostLogRaw(ptrOf(b), uint32(len(b)))
}

func ptrOf(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}
