"""Names and tactics of the MITRE ATT&CK and ATLAS techniques our detectors and
rules cite, so an alert says ``T1530 Data from Cloud Storage`` rather than a
bare id. Unknown ids are kept and shown as they are.
"""

from __future__ import annotations

ATTACK = "MITRE ATT&CK"
ATLAS = "MITRE ATLAS"

#: id -> (name, tactic id, tactic name)
TECHNIQUES: dict[str, tuple[str, str, str]] = {
    # ATT&CK (enterprise)
    "T1078": ("Valid Accounts", "TA0001", "Initial Access"),
    "T1078.004": ("Valid Accounts: Cloud Accounts", "TA0001", "Initial Access"),
    "T1110": ("Brute Force", "TA0006", "Credential Access"),
    "T1110.001": ("Brute Force: Password Guessing", "TA0006", "Credential Access"),
    "T1110.003": ("Brute Force: Password Spraying", "TA0006", "Credential Access"),
    "T1110.004": ("Brute Force: Credential Stuffing", "TA0006", "Credential Access"),
    "T1552": ("Unsecured Credentials", "TA0006", "Credential Access"),
    "T1528": ("Steal Application Access Token", "TA0006", "Credential Access"),
    "T1530": ("Data from Cloud Storage", "TA0009", "Collection"),
    "T1213": ("Data from Information Repositories", "TA0009", "Collection"),
    "T1567": ("Exfiltration Over Web Service", "TA0010", "Exfiltration"),
    "T1567.002": ("Exfiltration to Cloud Storage", "TA0010", "Exfiltration"),
    "T1537": ("Transfer Data to Cloud Account", "TA0010", "Exfiltration"),
    "T1030": ("Data Transfer Size Limits", "TA0010", "Exfiltration"),
    "T1565": ("Data Manipulation", "TA0040", "Impact"),
    "T1565.001": ("Stored Data Manipulation", "TA0040", "Impact"),
    "T1562": ("Impair Defenses", "TA0005", "Defense Evasion"),
    "T1562.008": ("Impair Defenses: Disable or Modify Cloud Logs", "TA0005", "Defense Evasion"),
    "T1550": ("Use Alternate Authentication Material", "TA0008", "Lateral Movement"),
    "T1550.001": ("Application Access Token", "TA0008", "Lateral Movement"),
    "T1021": ("Remote Services", "TA0008", "Lateral Movement"),
    "T1496": ("Resource Hijacking", "TA0040", "Impact"),
    "T1190": ("Exploit Public-Facing Application", "TA0001", "Initial Access"),
    # ATLAS
    "AML.T0024": ("Exfiltration via AI Inference API", "AML.TA0010", "Exfiltration"),
    "AML.T0024.002": ("Extract AI Model", "AML.TA0010", "Exfiltration"),
    "AML.T0025": ("Exfiltration via Cyber Means", "AML.TA0010", "Exfiltration"),
    "AML.T0040": ("AI Model Inference API Access", "AML.TA0000", "AI Model Access"),
    "AML.T0034": ("Cost Harvesting", "AML.TA0011", "Impact"),
    "AML.T0029": ("Denial of AI Service", "AML.TA0011", "Impact"),
    "AML.T0051": ("LLM Prompt Injection", "AML.TA0005", "Execution"),
    "AML.T0051.000": ("LLM Prompt Injection: Direct", "AML.TA0005", "Execution"),
    "AML.T0051.001": ("LLM Prompt Injection: Indirect", "AML.TA0005", "Execution"),
    "AML.T0054": ("LLM Jailbreak", "AML.TA0012", "Privilege Escalation"),
    "AML.T0056": ("Extract LLM System Prompt", "AML.TA0010", "Exfiltration"),
    "AML.T0018": ("Manipulate AI Model", "AML.TA0006", "Persistence"),
    "AML.T0018.000": ("Poison AI Model", "AML.TA0006", "Persistence"),
    "AML.T0020": ("Poison Training Data", "AML.TA0003", "Resource Development"),
    "AML.T0015": ("Evade AI Model", "AML.TA0007", "Defense Evasion"),
    "AML.T0012": ("Valid Accounts", "AML.TA0004", "Initial Access"),
    "AML.T0035": ("AI Artifact Collection", "AML.TA0009", "Collection"),
    "AML.T0037": ("Data from Local System", "AML.TA0009", "Collection"),
    "AML.T0044": ("Full AI Model Access", "AML.TA0000", "AI Model Access"),
    "AML.T0048": ("External Harms", "AML.TA0011", "Impact"),
    "AML.T0055": ("Unsecured Credentials", "AML.TA0013", "Credential Access"),
}


def framework_of(technique_id: str) -> str:
    return ATLAS if technique_id.upper().startswith("AML.") else ATTACK


def reference_of(technique_id: str) -> str:
    tid = technique_id.upper()
    if tid.startswith("AML."):
        return f"https://atlas.mitre.org/techniques/{tid}"
    return "https://attack.mitre.org/techniques/" + tid.replace(".", "/") + "/"


def normalise(technique_id: str) -> str:
    """``t1110.003`` / ``aml.t0051`` -> ``T1110.003`` / ``AML.T0051``."""
    return technique_id.strip().upper()


def describe(technique_ids: list[str] | tuple[str, ...]) -> dict[str, object]:
    """ECS ``threat.*`` for a list of technique ids (ATT&CK and ATLAS mixed).

    ``threat.technique.*`` and ``threat.tactic.*`` are ECS keyword arrays, so
    one alert can cite ATT&CK and ATLAS ids together.
    """
    ids = [normalise(t) for t in technique_ids if t]
    if not ids:
        return {}
    seen: dict[str, None] = dict.fromkeys(ids)
    ids = list(seen)
    names = [TECHNIQUES.get(t, (t, "", ""))[0] for t in ids]
    tactic_pairs = dict.fromkeys((TECHNIQUES[t][1], TECHNIQUES[t][2]) for t in ids if t in TECHNIQUES)
    frameworks = {framework_of(t) for t in ids}
    # ECS threat.framework is a single keyword: ATT&CK when cited, else ATLAS;
    # technique.id (an array) carries the ids of both.
    threat: dict[str, object] = {
        "framework": ATTACK if ATTACK in frameworks else ATLAS,
        "technique": {"id": ids, "name": names, "reference": [reference_of(t) for t in ids]},
    }
    if tactic_pairs:
        threat["tactic"] = {"id": [p[0] for p in tactic_pairs], "name": [p[1] for p in tactic_pairs]}
    return threat
