"""Results formats: one module per results folder, the only code that reads or writes its files.

    results/{folder}/ -> lmfeatures.store.{folder}

Stages choose paths and call these readers and writers and the algorithm modules; algorithms never
touch files.
"""
