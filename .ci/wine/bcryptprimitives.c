/* Wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's standard library uses for
 * randomness (HashMap keys, ...): this shim forwards it to RtlGenRandom, which Wine has
 * (advapi32!SystemFunction036), returning a full TRUE as callers check. Built and used by
 * .ci/run to run the Windows test suite under Wine; never part of the product. */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
