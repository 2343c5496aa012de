#!/usr/bin/env python3
"""What the real pam_env.so makes of environment files.

Usage: pam_env_read.py DIR
Reads DIR/0, DIR/1, ... in turn as pam_env's envfile (readenv=1, no
conffile, no user file) through libpam (pam_start_confdir with a private
service file, pam_setcred, pam_getenvlist) and prints one JSON list: for
each file the environment pam_env built, as {name: value}, bytes kept as
latin-1 code points.
"""
import ctypes
import json
import os
import shutil
import sys
import tempfile

PAM_ESTABLISH_CRED = 0x0002

libpam = ctypes.CDLL("libpam.so.0")
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", ctypes.c_void_p)]


@CONV
def no_conversation(n, msg, resp, data):
    return 19  # PAM_CONV_ERR: pam_env never asks anything


libpam.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                                     ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
libpam.pam_setcred.argtypes = [ctypes.c_void_p, ctypes.c_int]
libpam.pam_getenvlist.argtypes = [ctypes.c_void_p]
libpam.pam_getenvlist.restype = ctypes.POINTER(ctypes.c_char_p)
libpam.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]


def main():
    cases = sys.argv[1]
    work = tempfile.mkdtemp(prefix="pam-env-")
    try:
        envfile = os.path.join(work, "environment")
        empty = os.path.join(work, "empty.conf")
        open(empty, "w").close()
        with open(os.path.join(work, "nodeprep-env"), "w") as f:
            f.write(f"auth required pam_env.so readenv=1 user_readenv=0 envfile={envfile} conffile={empty}\n")
        conv = PamConv(no_conversation, None)
        out = []
        n = 0
        while os.path.exists(os.path.join(cases, str(n))):
            shutil.copyfile(os.path.join(cases, str(n)), envfile)
            handle = ctypes.c_void_p()
            rc = libpam.pam_start_confdir(b"nodeprep-env", b"root", ctypes.byref(conv),
                                          work.encode(), ctypes.byref(handle))
            if rc != 0:
                sys.exit(f"pam_start_confdir: {rc}")
            rc = libpam.pam_setcred(handle, PAM_ESTABLISH_CRED)
            env = {}
            lst = libpam.pam_getenvlist(handle)
            i = 0
            while lst and lst[i] is not None:
                k, _, v = lst[i].partition(b"=")
                env[k.decode("latin-1")] = v.decode("latin-1")
                i += 1
            libpam.pam_end(handle, 0)
            out.append(env)
            n += 1
        json.dump(out, sys.stdout)
    finally:
        shutil.rmtree(work)


main()
