"""Everything the report and the neuron pages show, kept apart from the computations.

    render            the renderer (Quarto, else pandoc) and the section assembly from the registry
    plotting          one matplotlib backend and seaborn theme, atomic figure saves, markdown escaping
    pages             the neuron page builder: dataset sections now, later stages add theirs
    models            the "Models" section: model table and training curves
    dataset_examples  the "Dataset examples" section: distributions, concentration table, gallery
    dreaming          the "Dreaming" section: EPO frontiers against the data

A section's pieces are written by one rule under results/report/{section}/, its text lives in
report/sections/{section}.md, and the registry in workflow/rules/report.smk lists the sections.
"""
