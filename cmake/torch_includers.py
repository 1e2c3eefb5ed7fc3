"""Prints, one per line, which of the given source files reach torch's headers (<torch/...>, <ATen/...>,
<c10/...>) through their own #includes or those of the project headers they include, transitively.

cmake/torch.cmake gives only those sources the precompiled torch header: loading it costs a torch-free source
several seconds (it is ~700 MB), while it saves a torch-using one more. A source misjudged here compiles
correctly either way, only slower.

    python cmake/torch_includers.py PROJECT_ROOT SOURCE...
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)
TORCH = ("torch/", "ATen/", "c10/")


def reaches_torch(path: str, root: str, memo: dict[str, bool]) -> bool:
    if path in memo:
        return memo[path]
    memo[path] = False  # cuts include cycles (a header on one may be judged torch-free: only slower)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    for kind, name in INCLUDE.findall(text):
        if kind == "<":
            found = name.startswith(TORCH)
        else:  # a project header, by its path from the root ("core/linear.h") or beside the includer
            found = any(os.path.isfile(c) and reaches_torch(os.path.realpath(c), root, memo)
                        for c in (os.path.join(root, name), os.path.join(os.path.dirname(path), name)))
        if found:
            memo[path] = True
            return True
    return False


def main() -> None:
    root, sources = sys.argv[1], sys.argv[2:]
    memo: dict[str, bool] = {}
    for source in sources:
        if reaches_torch(os.path.realpath(source), root, memo):
            print(source)


if __name__ == "__main__":
    main()
