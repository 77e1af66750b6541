/*
 * A stand-in for Windows' bcryptprimitives.dll under Wine 8, which lacks ProcessPrng.
 * Rust's standard library (1.78 and later) takes its random bytes from ProcessPrng; this
 * DLL forwards them to RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 * Built by .ci/wine/runner with x86_64-w64-mingw32-gcc; used only to run tests under Wine.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
