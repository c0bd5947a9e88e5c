"""What a trained model learned and how it fares on new data: explanations, drift checks,
figures and the HTML report."""
