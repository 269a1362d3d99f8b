"""facial-keypoints: find every face in a photo or video and put 68 keypoints on it.

    from facial_keypoints import KeypointDetector, load_image
    detector = KeypointDetector()                 # the shipped model, on onnxruntime
    faces = detector.detect(load_image("photo.jpg"))   # [Face(box=(x, y, w, h), keypoints=(68, 2))]

The names below are loaded on first use (PEP 562), so that importing one module of the package
(face_crop, say, which training shares) does not load the detectors or onnxruntime.
"""

import importlib

# public name -> the module of this package that defines it
EXPORTS = {
    "KeypointDetector": "detect",
    "FaceDetector": "detect",
    "BlazeFaceDetector": "detect",
    "FaceTracker": "tracking",
    "Face": "media",
    "load_image": "media",
    "DataError": "media",
}
__all__ = sorted(EXPORTS)


def __getattr__(name):
    if name not in EXPORTS:
        raise AttributeError(f"module 'facial_keypoints' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{EXPORTS[name]}", __name__), name)
