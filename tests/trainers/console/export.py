"""The console trainer's export entrypoint (the platform's export contract): a small file per
format that names the checkpoint's class and the options it was asked for. Format "broken" fails,
for the tests of a failed export."""

import json
import os


def export(checkpoint_path, output_dir, format, image_size, half=False, dynamic=False, device="cpu"):
    with open(checkpoint_path) as f:
        model = json.load(f)
    if format == "broken":
        raise RuntimeError("the console trainer cannot export to 'broken'")
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript"}[format]
    path = os.path.join(output_dir, "console-best" + suffix)
    with open(path, "w") as f:
        json.dump({"format": format, "class_name": model["class_name"], "image_size": image_size,
                   "half": half, "dynamic": dynamic, "device": device}, f)
    return [path]
